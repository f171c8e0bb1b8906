// The palette commands: codebase-wide explain and refactor, explain and ask, reindex, status, chat.
// Each runs a server command with a cancellable notification; answers open as markdown previews
// (the server shows its answer document, see client.ts), edits come back as workspace/applyEdit.
import * as vscode from 'vscode';
import type { LanguageClient } from 'vscode-languageclient/node';

interface CommandResult {
  message?: string;
  summary?: string;
  [key: string]: unknown;
}

export class ServerCommands {
  private readonly client: () => LanguageClient | undefined;

  constructor(client: () => LanguageClient | undefined) {
    this.client = client;
  }

  /** Run a server command with a notification that can cancel it; undefined when cancelled or failed. */
  async run(title: string, command: string, argument: Record<string, unknown>): Promise<CommandResult | undefined> {
    const client = this.client();
    if (client === undefined || !client.isRunning()) {
      void vscode.window.showErrorMessage('swarm-lsp: the server is not running (see the status bar).');
      return undefined;
    }
    return vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `swarm-lsp: ${title}`, cancellable: true },
      async (_progress, token) => {
        try {
          return (await client.sendRequest(
            'workspace/executeCommand',
            { command, arguments: [argument] },
            token,
          )) as CommandResult;
        } catch (error) {
          if (!token.isCancellationRequested) {
            void vscode.window.showErrorMessage(`swarm-lsp: ${title} failed: ${(error as Error).message ?? error}`);
          }
          return undefined;
        }
      },
    );
  }

  private where(): Record<string, unknown> {
    const editor = vscode.window.activeTextEditor;
    const client = this.client();
    if (editor === undefined || editor.document.uri.scheme !== 'file' || client === undefined) {
      return {};
    }
    const argument: Record<string, unknown> = { uri: editor.document.uri.toString() };
    if (!editor.selection.isEmpty) {
      argument.range = client.code2ProtocolConverter.asRange(editor.selection);
    }
    return argument;
  }

  async explainCodebase(): Promise<void> {
    const question = await vscode.window.showInputBox({
      prompt: 'swarm-lsp: what should the overview answer? (empty: a general overview)',
      ignoreFocusOut: true,
    });
    if (question === undefined) {
      return;
    }
    const { uri } = this.where();
    await this.run('explaining the codebase', 'swarm.explainCodebase', { question: question.trim() || undefined, uri });
  }

  async refactorCodebase(): Promise<void> {
    const instruction = await vscode.window.showInputBox({
      prompt: 'swarm-lsp: one instruction across the codebase',
      placeHolder: 'e.g. rename fetch_user to load_user',
      ignoreFocusOut: true,
    });
    if (instruction === undefined || instruction.trim() === '') {
      return;
    }
    const { uri } = this.where();
    const result = await this.run('refactoring the codebase', 'swarm.refactorCodebase', { instruction: instruction.trim(), uri });
    if (result?.message) {
      void vscode.window.showInformationMessage(String(result.message));
    }
  }

  async explain(): Promise<void> {
    const argument = this.where();
    if (argument.uri === undefined) {
      void vscode.window.showWarningMessage('swarm-lsp: open a file (and select code) to explain.');
      return;
    }
    await this.run('explaining', 'swarm.explain', argument);
  }

  async ask(): Promise<void> {
    const question = await vscode.window.showInputBox({ prompt: 'swarm-lsp: your question about the codebase', ignoreFocusOut: true });
    if (question === undefined || question.trim() === '') {
      return;
    }
    await this.run('answering', 'swarm.ask', { ...this.where(), question: question.trim() });
  }

  async reindex(): Promise<void> {
    const counts = await this.run('reindexing', 'swarm.reindex', {});
    if (counts !== undefined) {
      const parts = Object.entries(counts)
        .filter(([, value]) => typeof value === 'number')
        .map(([key, value]) => `${value} ${key}`);
      void vscode.window.showInformationMessage(`swarm-lsp: reindexed: ${parts.join(', ')}`);
    }
  }

  async status(): Promise<void> {
    const status = await this.run('status', 'swarm.status', {});
    if (status !== undefined) {
      const document = await vscode.workspace.openTextDocument({ language: 'json', content: JSON.stringify(status, null, 2) });
      await vscode.window.showTextDocument(document, { viewColumn: vscode.ViewColumn.Beside, preview: true });
    }
  }
}
