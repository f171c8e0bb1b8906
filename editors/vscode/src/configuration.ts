// Reading the `swarm-lsp.*` settings the user set (not VS Code's defaults), per workspace folder.
import * as vscode from 'vscode';

import { SERVER_SETTINGS, toServerSettings, type ServerSettings } from './settings.ts';

export const SECTION = 'swarm-lsp';

/** The values set by the user, folder over workspace over user settings; defaults are left out. */
export function userValues(scope?: vscode.ConfigurationScope): Record<string, unknown> {
  const configuration = vscode.workspace.getConfiguration(SECTION, scope);
  const values: Record<string, unknown> = {};
  for (const key of SERVER_SETTINGS) {
    const inspected = configuration.inspect(key);
    const value = inspected?.workspaceFolderValue ?? inspected?.workspaceValue ?? inspected?.globalValue;
    if (value !== undefined) {
      values[key] = value;
    }
  }
  return values;
}

export function serverSettings(scope?: vscode.ConfigurationScope): ServerSettings {
  return toServerSettings(userValues(scope));
}

export function clientSetting<T>(key: string, fallback: T): T {
  return vscode.workspace.getConfiguration(SECTION).get<T>(key, fallback);
}
