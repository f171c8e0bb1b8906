// The chat view (a webview in the secondary side bar): sends `swarm.chat`, streams the
// `swarm/chatChunk` notifications into the pending answer, shows the agreement and the sources as links
// that open path:line, keeps the conversation, and stops a running answer (`$/cancelRequest`).
import { randomUUID } from 'node:crypto';
import * as vscode from 'vscode';
import type { LanguageClient } from 'vscode-languageclient/node';

import { openSource } from './openSource.ts';
import { linkify, parseSources, type SourceLink } from './sources.ts';

interface ChatChunk {
  kind: string;
  conversationId?: string | null;
  text: string;
  done: boolean;
}

interface ChatResult {
  answer?: string;
  agreement?: number;
  low_agreement?: boolean;
  strategy?: string;
  voters?: number;
  finished_voters?: number;
  model?: string;
  sources?: unknown[];
  conversationId?: string | null;
}

type FromView =
  | { type: 'send'; text: string }
  | { type: 'stop' }
  | { type: 'new' }
  | { type: 'open'; link: SourceLink };

const REQUEST_CANCELLED = -32800;

export class ChatView implements vscode.WebviewViewProvider {
  static readonly id = 'swarmLsp.chat';

  private view: vscode.WebviewView | undefined;
  private running: vscode.CancellationTokenSource | undefined;
  private conversationId: string | undefined;
  private readonly extensionUri: vscode.Uri;
  private readonly client: () => LanguageClient | undefined;

  constructor(extensionUri: vscode.Uri, client: () => LanguageClient | undefined) {
    this.extensionUri = extensionUri;
    this.client = client;
  }

  get busy(): boolean {
    return this.running !== undefined;
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    const media = vscode.Uri.joinPath(this.extensionUri, 'media');
    view.webview.options = { enableScripts: true, localResourceRoots: [media] };
    view.webview.html = this.html(view.webview, media);
    view.webview.onDidReceiveMessage((message: FromView) => this.received(message));
    view.onDidDispose(() => {
      this.view = undefined;
    });
  }

  /** A `swarm/chatChunk`: the answer so far, shown while the vote is pending. */
  chunk(chunk: ChatChunk): void {
    if (this.running !== undefined && chunk.kind === 'chat' && !chunk.done) {
      this.post({ type: 'chunk', text: chunk.text });
    }
  }

  newConversation(): void {
    this.running?.cancel();
    this.conversationId = undefined;
    this.post({ type: 'cleared' });
  }

  stop(): void {
    this.running?.cancel();
  }

  private async received(message: FromView): Promise<void> {
    if (message.type === 'send') {
      await this.send(message.text);
    } else if (message.type === 'stop') {
      this.stop();
    } else if (message.type === 'new') {
      this.newConversation();
    } else if (message.type === 'open') {
      await openSource(message.link);
    }
  }

  async send(text: string): Promise<void> {
    const client = this.client();
    const message = text.trim();
    if (message === '' || this.running !== undefined) {
      return;
    }
    if (client === undefined || !client.isRunning()) {
      this.post({ type: 'error', message: 'The swarm-lsp server is not running (see the status bar).' });
      return;
    }
    const running = new vscode.CancellationTokenSource();
    this.running = running;
    this.post({ type: 'user', text: message });
    this.post({ type: 'busy', busy: true });
    const editor = vscode.window.activeTextEditor;
    const argument: Record<string, unknown> = { message, conversationId: this.conversationId ?? null };
    if (editor !== undefined && editor.document.uri.scheme === 'file') {
      argument.uri = editor.document.uri.toString();
    }
    try {
      const result = (await client.sendRequest(
        'workspace/executeCommand',
        { command: 'swarm.chat', arguments: [argument] },
        running.token,
      )) as ChatResult;
      this.conversationId = result.conversationId ?? this.conversationId;
      this.post({
        type: 'answer',
        pieces: linkify(result.answer ?? ''),
        agreement: result.agreement ?? 0,
        lowAgreement: result.low_agreement ?? false,
        how: `${result.strategy ?? ''}, ${result.finished_voters ?? result.voters ?? 0}/${result.voters ?? 0} voters`,
        sources: parseSources(result.sources),
      });
    } catch (error) {
      const code = (error as { code?: number }).code;
      if (running.token.isCancellationRequested || code === REQUEST_CANCELLED) {
        this.post({ type: 'stopped' });
      } else {
        this.post({ type: 'error', message: (error as Error).message ?? String(error) });
      }
    } finally {
      running.dispose();
      this.running = undefined;
      this.post({ type: 'busy', busy: false });
    }
  }

  private post(message: Record<string, unknown>): void {
    void this.view?.webview.postMessage(message);
  }

  private html(webview: vscode.Webview, media: vscode.Uri): string {
    const nonce = randomUUID();
    const script = webview.asWebviewUri(vscode.Uri.joinPath(media, 'chat.js'));
    const style = webview.asWebviewUri(vscode.Uri.joinPath(media, 'chat.css'));
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${webview.cspSource}; script-src 'nonce-${nonce}';">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link href="${style}" rel="stylesheet">
<title>swarm-lsp chat</title>
</head>
<body>
<div id="messages" role="log" aria-live="polite"></div>
<form id="composer">
  <textarea id="input" rows="3" placeholder="Ask about the code (Enter sends, Shift+Enter a new line)"></textarea>
  <div class="buttons">
    <button type="submit" id="send">Send</button>
    <button type="button" id="stop" disabled>Stop</button>
    <button type="button" id="new" class="secondary">New chat</button>
  </div>
</form>
<script nonce="${nonce}" src="${script}"></script>
</body>
</html>`;
  }
}
