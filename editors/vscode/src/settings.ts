// The extension's settings (`swarm-lsp.*` in VS Code) as the server's settings: VS Code names keys in
// camelCase (`swarm-lsp.model.contextLength`), the server in snake_case sections
// (`{"model": {"context_length": ...}}`, see docs/configuration.md). Only what the user set is sent,
// so `.swarm-lsp.toml` and SWARM_LSP_* still apply where the editor says nothing.

/** The settings passed to the server: `section.key` in VS Code's spelling. */
export const SERVER_SETTINGS = [
  'model.name',
  'model.path',
  'model.backend',
  'model.contextLength',
  'model.threads',
  'remote.baseUrl',
  'remote.model',
  'swarm.voters',
  'swarm.strategy',
  'swarm.maxTokens',
  'swarm.temperature',
  'swarm.models',
  'swarm.diversity',
  'index.auto',
  'index.watch',
  'index.embedder',
  'index.exclude',
  'completion.enabled',
  'completion.model',
  'tools.read',
  'tools.write',
  'tools.execute',
  'tools.destructive',
] as const;

export type ServerSettingKey = (typeof SERVER_SETTINGS)[number];

/** The editor-only settings (how the server is started), never sent to it. */
export const CLIENT_SETTINGS = ['server.command', 'server.args', 'server.logFile'] as const;

export type ServerSettings = Record<string, Record<string, unknown>>;

export function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

/** Whether a value counts as set: null, undefined and blank strings leave the server's own value. */
export function isSet(value: unknown): boolean {
  if (value === undefined || value === null) {
    return false;
  }
  return typeof value !== 'string' || value.trim() !== '';
}

/**
 * The server's settings from the values the user set, by VS Code key (`model.contextLength`).
 * Keys that are not server settings are ignored, as are unset values.
 */
export function toServerSettings(values: Partial<Record<string, unknown>>): ServerSettings {
  const settings: ServerSettings = {};
  for (const key of SERVER_SETTINGS) {
    const value = values[key];
    if (!isSet(value)) {
      continue;
    }
    const [section, name] = key.split('.');
    settings[section] ??= {};
    settings[section][snakeCase(name)] = typeof value === 'string' ? value.trim() : value;
  }
  return settings;
}

/** Whether a configuration change touches what the client starts (the server must restart). */
export function changesServerStart(affects: (key: string) => boolean): boolean {
  return CLIENT_SETTINGS.some((key) => affects(`swarm-lsp.${key}`));
}
