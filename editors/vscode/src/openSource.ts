// Opening a source reference (`pkg/util.py:10-14`) at its line, in whichever workspace folder holds it.
import * as vscode from 'vscode';

import { resolveInFolder, type SourceLink } from './sources.ts';

export async function openSource(link: SourceLink): Promise<boolean> {
  const active = vscode.window.activeTextEditor?.document.uri;
  const folders = [...(vscode.workspace.workspaceFolders ?? [])];
  const first = active ? vscode.workspace.getWorkspaceFolder(active) : undefined;
  if (first !== undefined) {
    folders.sort((a, b) => (a === first ? -1 : b === first ? 1 : 0));
  }
  for (const folder of folders) {
    const file = resolveInFolder(folder.uri.fsPath, link);
    if (file === undefined) {
      continue;
    }
    const uri = vscode.Uri.file(file);
    try {
      await vscode.workspace.fs.stat(uri);
    } catch {
      continue;
    }
    const start = new vscode.Position(link.line - 1, 0);
    const end = new vscode.Position((link.endLine ?? link.line) - 1, 0);
    await vscode.window.showTextDocument(uri, {
      selection: new vscode.Range(start, start),
      viewColumn: vscode.ViewColumn.One,
      preview: false,
    });
    vscode.window.activeTextEditor?.revealRange(new vscode.Range(start, end), vscode.TextEditorRevealType.InCenter);
    return true;
  }
  void vscode.window.showWarningMessage(`swarm-lsp: ${link.label} is not a file in this workspace.`);
  return false;
}
