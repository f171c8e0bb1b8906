// swarm-lsp for VS Code: starts the language server, and adds what a generic client lacks: a chat
// view, palette commands, a status bar item, prompts for the user's words, and answer previews.
import * as vscode from 'vscode';
import { type LanguageClient, State } from 'vscode-languageclient/node';

import { Activity, type ServerState } from './activity.ts';
import { ChatView } from './chatView.ts';
import { createClient, serverCommand } from './client.ts';
import { ServerCommands } from './commands.ts';
import { INSTALL_URL, notFoundMessage } from './serverCommand.ts';
import { changesServerStart } from './settings.ts';

let client: LanguageClient | undefined;

/** What clicking the status bar item does, by the server's state. */
const STATUS_CLICK: Record<ServerState, string> = {
  starting: 'swarmLsp.showOutput',
  running: 'swarmLsp.openChat',
  stopped: 'swarmLsp.showOutput',
  missing: 'swarmLsp.installHelp',
};

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('swarm-lsp', { log: true });
  const activity = new Activity();
  const status = vscode.window.createStatusBarItem('swarmLsp.status', vscode.StatusBarAlignment.Left, 0);
  status.name = 'swarm-lsp';
  const refresh = (): void => {
    const { text, tooltip } = activity.status();
    status.text = text;
    status.tooltip = tooltip;
    status.command = STATUS_CLICK[activity.state];
    status.show();
  };
  const chat = new ChatView(context.extensionUri, () => client);
  const commands = new ServerCommands(() => client);

  const installHelp = async (): Promise<void> => {
    // Packaging names it readme.md; a development checkout has README.md.
    for (const name of ['readme.md', 'README.md']) {
      const readme = vscode.Uri.joinPath(context.extensionUri, name);
      try {
        await vscode.workspace.fs.stat(readme);
      } catch {
        continue;
      }
      await vscode.commands.executeCommand('markdown.showPreview', readme);
      return;
    }
    await vscode.env.openExternal(vscode.Uri.parse(INSTALL_URL));
  };

  const start = async (): Promise<void> => {
    activity.state = 'starting';
    activity.clear();
    refresh();
    const { found, interpreter } = await serverCommand();
    if (found === undefined) {
      activity.state = 'missing';
      refresh();
      const choice = await vscode.window.showErrorMessage(notFoundMessage(interpreter), 'Install instructions', 'Open settings');
      if (choice === 'Install instructions') {
        await installHelp();
      } else if (choice === 'Open settings') {
        await vscode.commands.executeCommand('workbench.action.openSettings', 'swarm-lsp.server');
      }
      return;
    }
    output.info(`starting ${found.command} ${found.args.join(' ')} (from ${found.source})`);
    const started = createClient(found, { activity, refresh, chatting: () => chat.busy, output });
    client = started;
    started.onDidChangeState((event) => {
      activity.state = event.newState === State.Running ? 'running' : event.newState === State.Starting ? 'starting' : 'stopped';
      if (event.newState !== State.Running) {
        activity.clear();
      }
      refresh();
    });
    started.onNotification('swarm/chatChunk', (params) => chat.chunk(params));
    try {
      await started.start();
    } catch (error) {
      activity.state = 'stopped';
      refresh();
      const choice = await vscode.window.showErrorMessage(
        `swarm-lsp: the server (${found.command}) did not start: ${(error as Error).message ?? error}`,
        'Show output',
      );
      if (choice === 'Show output') {
        output.show();
      }
    }
  };

  const restart = async (): Promise<void> => {
    const running = client;
    client = undefined;
    if (running !== undefined) {
      await running.dispose().catch((error: unknown) => output.warn(`stopping the server: ${String(error)}`));
    }
    await start();
  };

  context.subscriptions.push(
    output,
    status,
    vscode.window.registerWebviewViewProvider(ChatView.id, chat, { webviewOptions: { retainContextWhenHidden: true } }),
    vscode.commands.registerCommand('swarmLsp.openChat', () => vscode.commands.executeCommand(`${ChatView.id}.focus`)),
    vscode.commands.registerCommand('swarmLsp.newChat', () => chat.newConversation()),
    vscode.commands.registerCommand('swarmLsp.stopChat', () => chat.stop()),
    vscode.commands.registerCommand('swarmLsp.explain', () => commands.explain()),
    vscode.commands.registerCommand('swarmLsp.ask', () => commands.ask()),
    vscode.commands.registerCommand('swarmLsp.explainCodebase', () => commands.explainCodebase()),
    vscode.commands.registerCommand('swarmLsp.refactorCodebase', () => commands.refactorCodebase()),
    vscode.commands.registerCommand('swarmLsp.reindex', () => commands.reindex()),
    vscode.commands.registerCommand('swarmLsp.status', () => commands.status()),
    vscode.commands.registerCommand('swarmLsp.restart', restart),
    vscode.commands.registerCommand('swarmLsp.showOutput', () => output.show()),
    vscode.commands.registerCommand('swarmLsp.installHelp', installHelp),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (changesServerStart((key) => event.affectsConfiguration(key)) || event.affectsConfiguration('python.defaultInterpreterPath')) {
        void restart();
      }
    }),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  const running = client;
  client = undefined;
  await running?.dispose();
}
