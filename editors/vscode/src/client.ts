// The language client: starts `swarm-lsp serve` over stdio and adapts what VS Code needs. Settings go
// as initializationOptions and are pulled again on change (`workspace/configuration`, mapped to the
// server's names); "Refactor..." and "Ask" prompt for the user's words; explain/ask answers open as a
// markdown preview beside the editor; progress feeds the status bar.
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import {
  LanguageClient,
  type LanguageClientOptions,
  type Middleware,
  RevealOutputChannelOn,
  type ServerOptions,
  type ShowDocumentParams,
  TransportKind,
} from 'vscode-languageclient/node';

import type { Activity, ProgressEvent } from './activity.ts';
import { clientSetting, SECTION, serverSettings } from './configuration.ts';
import { selectedInterpreter } from './pythonEnvironment.ts';
import { findServerCommand, type ServerCommand } from './serverCommand.ts';

export const LANGUAGES = [
  'python', 'javascript', 'typescript', 'javascriptreact', 'typescriptreact', 'go', 'rust', 'java', 'c',
  'cpp', 'markdown',
];

/** What the client asks of the rest of the extension. */
export interface ClientHooks {
  activity: Activity;
  /** The status bar should show the activity again. */
  refresh(): void;
  /** True while the chat view waits for an answer: its answer documents are not opened. */
  chatting(): boolean;
  output: vscode.LogOutputChannel;
}

/** The server's command for this window, or undefined (the caller tells the user). */
export async function serverCommand(): Promise<{ found?: ServerCommand; interpreter?: string }> {
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
  const interpreter = await selectedInterpreter(folder);
  const found = findServerCommand({
    setting: clientSetting<string[] | string | undefined>('server.command', undefined),
    extraArgs: clientSetting<string[]>('server.args', []),
    logFile: clientSetting<string>('server.logFile', ''),
    pythonInterpreter: interpreter,
    pathVariable: process.env.PATH,
    isExecutable: (file) => {
      try {
        fs.accessSync(file, fs.constants.X_OK);
        return fs.statSync(file).isFile();
      } catch {
        return false;
      }
    },
  });
  return { found, interpreter };
}

const PROMPTS: Record<string, { field: string; prompt: string; placeHolder: string }> = {
  'swarm.refactor': {
    field: 'instruction',
    prompt: 'swarm-lsp: how should the selection be refactored?',
    placeHolder: 'e.g. use a list comprehension',
  },
  'swarm.ask': { field: 'question', prompt: 'swarm-lsp: your question about this code', placeHolder: 'e.g. where is this called?' },
};

/** Asks for the user's words when a command needs them; undefined when the user cancelled. */
async function withUserWords(command: string, args: unknown[]): Promise<unknown[] | undefined> {
  const prompt = PROMPTS[command];
  const argument = (args[0] ?? {}) as Record<string, unknown>;
  if (prompt === undefined || (typeof argument[prompt.field] === 'string' && argument[prompt.field] !== '')) {
    return args;
  }
  const words = await vscode.window.showInputBox({ prompt: prompt.prompt, placeHolder: prompt.placeHolder, ignoreFocusOut: true });
  if (words === undefined || words.trim() === '') {
    return undefined;
  }
  return [{ ...argument, [prompt.field]: words.trim() }, ...args.slice(1)];
}

function isAnswerDocument(uri: vscode.Uri): boolean {
  return uri.scheme === 'file' && uri.path.endsWith('.md') && uri.path.includes('/answers/');
}

function middleware(hooks: ClientHooks): Middleware {
  return {
    executeCommand: async (command, args, next) => {
      const withWords = await withUserWords(command, args);
      return withWords === undefined ? undefined : next(command, withWords);
    },
    handleWorkDoneProgress: (token, params, next) => {
      hooks.activity.apply(token, params as ProgressEvent);
      hooks.refresh();
      next(token, params);
    },
    workspace: {
      configuration: async (params, token, next) => {
        const others = params.items.filter((item) => item.section !== SECTION);
        const answered = others.length > 0 ? await next({ items: others }, token) : [];
        if (answered instanceof Error || !Array.isArray(answered)) {
          return answered;
        }
        let other = 0;
        return params.items.map((item) => {
          if (item.section !== SECTION) {
            return answered[other++];
          }
          return serverSettings(item.scopeUri ? vscode.Uri.parse(item.scopeUri) : undefined);
        });
      },
      // Say only that something changed: the server pulls its section through `configuration` above.
      didChangeConfiguration: (_sections, next) => next(undefined),
    },
    window: {
      showDocument: async (params: ShowDocumentParams, token, next) => {
        const uri = vscode.Uri.parse(params.uri);
        if (!isAnswerDocument(uri)) {
          return next(params, token);
        }
        if (uri.path.split('/').pop()?.startsWith('chat-') && hooks.chatting()) {
          return { success: true }; // the chat view shows it
        }
        try {
          await vscode.commands.executeCommand('markdown.showPreviewToSide', uri);
          return { success: true };
        } catch (error) {
          hooks.output.warn(`markdown preview failed (${String(error)}); opening the answer as text`);
          return next(params, token);
        }
      },
    },
  };
}

export function createClient(command: ServerCommand, hooks: ClientHooks): LanguageClient {
  const serverOptions: ServerOptions = {
    command: command.command,
    args: command.args,
    transport: TransportKind.stdio,
    options: { env: process.env },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.map((language) => ({ scheme: 'file', language })),
    initializationOptions: () => serverSettings(vscode.workspace.workspaceFolders?.[0]?.uri),
    synchronize: { configurationSection: SECTION },
    outputChannel: hooks.output,
    revealOutputChannelOn: RevealOutputChannelOn.Never,
    middleware: middleware(hooks),
  };
  return new LanguageClient('swarm-lsp', 'swarm-lsp', serverOptions, clientOptions);
}
