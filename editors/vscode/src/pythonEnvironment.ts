// The Python interpreter the user selected: the Python extension's active environment, else the
// `python.defaultInterpreterPath` setting. Undefined when neither names one.
import * as vscode from 'vscode';

interface PythonExtensionApi {
  environments?: {
    getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined;
  };
}

export async function selectedInterpreter(resource?: vscode.Uri): Promise<string | undefined> {
  const extension = vscode.extensions.getExtension<PythonExtensionApi>('ms-python.python');
  if (extension !== undefined) {
    try {
      const api = extension.isActive ? extension.exports : await extension.activate();
      const active = api?.environments?.getActiveEnvironmentPath(resource)?.path;
      if (active && active !== 'python') {
        return active;
      }
    } catch (error) {
      console.warn('swarm-lsp: the Python extension did not give its environment', error);
    }
  }
  const configured = vscode.workspace.getConfiguration('python', resource).get<string>('defaultInterpreterPath');
  return configured && configured !== 'python' ? configured : undefined;
}
