// Which `swarm-lsp` to start: the `swarm-lsp.server.command` setting, else the selected Python
// environment's `swarm-lsp`, else `swarm-lsp` on PATH. Pure: the caller supplies what it found.
import * as path from 'node:path';

export type CommandSource = 'setting' | 'python environment' | 'PATH';

export interface ServerCommand {
  command: string;
  args: string[];
  source: CommandSource;
}

export interface CommandInputs {
  /** The `swarm-lsp.server.command` setting: a program and its arguments, or one string. */
  setting: string[] | string | undefined;
  /** The selected Python interpreter (from the Python extension or python.defaultInterpreterPath). */
  pythonInterpreter?: string;
  /** The PATH environment variable. */
  pathVariable?: string;
  /** Extra arguments after `serve` (`swarm-lsp.server.args`). */
  extraArgs?: string[];
  /** `swarm-lsp.server.logFile`: passed as `--log-file`. */
  logFile?: string;
  platform?: NodeJS.Platform;
  /** Whether a file exists and can be run. */
  isExecutable: (file: string) => boolean;
}

export const INSTALL_URL = 'https://github.com/swarm-lsp/swarm-lsp#install';

/** The program name in a folder of executables, per platform. */
function executableNames(name: string, platform: NodeJS.Platform): string[] {
  return platform === 'win32' ? [`${name}.exe`, `${name}.cmd`, name] : [name];
}

/** The arguments for `swarm-lsp serve`, in the order the CLI expects. */
export function serveArguments(extraArgs: string[] = [], logFile?: string): string[] {
  const args = ['serve'];
  if (logFile && logFile.trim() !== '') {
    args.push('--log-file', logFile.trim());
  }
  return [...args, ...extraArgs.filter((arg) => arg !== '')];
}

/** The setting as a program and its arguments; an empty or blank setting is no setting. */
export function splitSetting(setting: string[] | string | undefined): string[] {
  if (setting === undefined) {
    return [];
  }
  const parts = Array.isArray(setting) ? setting : setting.trim().split(/\s+/);
  return parts.map((part) => part.trim()).filter((part) => part !== '');
}

/** Where a Python interpreter's scripts are installed (`bin` on Unix, `Scripts` on Windows). */
export function scriptsFolder(interpreter: string, platform: NodeJS.Platform): string {
  const pathOf = platform === 'win32' ? path.win32 : path.posix;
  const folder = pathOf.dirname(interpreter);
  // A Windows venv's python.exe lives in Scripts already; a system one keeps its scripts in Scripts/.
  if (platform === 'win32' && pathOf.basename(folder).toLowerCase() !== 'scripts') {
    return pathOf.join(folder, 'Scripts');
  }
  return folder;
}

export function findServerCommand(inputs: CommandInputs): ServerCommand | undefined {
  const platform = inputs.platform ?? process.platform;
  const serve = serveArguments(inputs.extraArgs, inputs.logFile);
  const configured = splitSetting(inputs.setting);
  if (configured.length > 0) {
    // A configured command is used as given: the user may name a wrapper that is not a file here.
    const [command, ...args] = configured;
    const namesServe = args.includes('serve');
    return { command, args: namesServe ? [...args, ...serve.slice(1)] : [...args, ...serve], source: 'setting' };
  }
  const pathOf = platform === 'win32' ? path.win32 : path.posix;
  if (inputs.pythonInterpreter) {
    const folder = scriptsFolder(inputs.pythonInterpreter, platform);
    for (const name of executableNames('swarm-lsp', platform)) {
      const candidate = pathOf.join(folder, name);
      if (inputs.isExecutable(candidate)) {
        return { command: candidate, args: serve, source: 'python environment' };
      }
    }
  }
  const separator = platform === 'win32' ? ';' : ':';
  for (const folder of (inputs.pathVariable ?? '').split(separator)) {
    if (folder === '') {
      continue;
    }
    for (const name of executableNames('swarm-lsp', platform)) {
      const candidate = pathOf.join(folder, name);
      if (inputs.isExecutable(candidate)) {
        return { command: candidate, args: serve, source: 'PATH' };
      }
    }
  }
  return undefined;
}

/** What to tell the user when no server was found. */
export function notFoundMessage(pythonInterpreter?: string): string {
  const where = pythonInterpreter ? ` (looked beside ${pythonInterpreter} and on PATH)` : ' (looked on PATH)';
  return (
    `swarm-lsp: the swarm-lsp server was not found${where}. Install it with ` +
    "`pip install swarm-lsp` in the selected Python environment, or set 'swarm-lsp.server.command'."
  );
}
