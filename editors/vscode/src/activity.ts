// What the status bar says: the server's work-done progress (indexing, swarm requests) folded into one
// line. Pure: the extension feeds it progress events and shows `status()`.

export type ProgressToken = string | number;

export interface ProgressEvent {
  kind: 'begin' | 'report' | 'end';
  title?: string;
  message?: string;
  percentage?: number;
}

export type ServerState = 'starting' | 'running' | 'stopped' | 'missing';

interface Job {
  title: string;
  message: string;
  percentage?: number;
}

export interface StatusText {
  text: string;
  tooltip: string;
}

const INDEXING = /^swarm-lsp: indexing /;

export class Activity {
  private readonly jobs = new Map<ProgressToken, Job>();
  state: ServerState = 'starting';
  /** How the last indexing ended ("12 files parsed, ..."). */
  lastIndex = '';

  apply(token: ProgressToken, event: ProgressEvent): void {
    if (event.kind === 'begin') {
      this.jobs.set(token, { title: event.title ?? '', message: event.message ?? '', percentage: event.percentage });
      return;
    }
    const job = this.jobs.get(token);
    if (job === undefined) {
      return;
    }
    if (event.kind === 'report') {
      job.message = event.message ?? job.message;
      job.percentage = event.percentage ?? job.percentage;
      return;
    }
    if (INDEXING.test(job.title)) {
      this.lastIndex = event.message ?? '';
    }
    this.jobs.delete(token);
  }

  /** Forget running jobs (the server stopped: no end will come). */
  clear(): void {
    this.jobs.clear();
  }

  get indexing(): boolean {
    return [...this.jobs.values()].some((job) => INDEXING.test(job.title));
  }

  status(): StatusText {
    if (this.state === 'missing') {
      return { text: '$(error) swarm-lsp: not found', tooltip: 'The swarm-lsp server was not found: click for help' };
    }
    if (this.state === 'stopped') {
      return { text: '$(debug-disconnect) swarm-lsp: stopped', tooltip: 'The server stopped: click to see its output' };
    }
    const jobs = [...this.jobs.values()];
    const indexing = jobs.find((job) => INDEXING.test(job.title));
    const requests = jobs.filter((job) => job !== indexing);
    const parts: string[] = [];
    if (indexing) {
      const share = indexing.percentage === undefined ? '' : ` ${indexing.percentage}%`;
      parts.push(`indexing${share}`);
    }
    if (requests.length === 1) {
      parts.push(shorten(requests[0].message || requests[0].title.replace(/^swarm-lsp: /, '')));
    } else if (requests.length > 1) {
      parts.push(`${requests.length} requests`);
    }
    const tooltip = [
      ...jobs.map((job) => `${job.title}${job.message ? `: ${job.message}` : ''}`),
      this.lastIndex ? `last indexing: ${this.lastIndex}` : '',
    ]
      .filter((line) => line !== '')
      .join('\n');
    if (parts.length > 0) {
      const icon = indexing ? '$(sync~spin)' : '$(loading~spin)';
      return { text: `${icon} swarm-lsp: ${parts.join(', ')}`, tooltip };
    }
    if (this.state === 'starting') {
      return { text: '$(loading~spin) swarm-lsp: starting', tooltip: 'Starting the server' };
    }
    return { text: '$(check) swarm-lsp', tooltip: tooltip || 'swarm-lsp is ready: click for the chat' };
  }
}

/** A progress message cut to fit the status bar: what the voters are doing, not their text. */
export function shorten(message: string, limit = 40): string {
  const head = message.split(':')[0].trim();
  return head.length > limit ? `${head.slice(0, limit - 1)}…` : head;
}
