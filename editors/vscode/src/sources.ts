// Source references as the server writes them (`pkg/util.py:10-14`, `README.md:3`,
// `pkg/util.py (outline)`) and where they point: a path relative to the workspace folder and a line.

export interface SourceLink {
  /** As written by the server: relative to the workspace folder, or absolute. */
  path: string;
  /** 1-based; 1 when the reference names no line. */
  line: number;
  endLine?: number;
  /** The text shown for the link. */
  label: string;
}

const WITH_LINES = /^(.+?):(\d+)(?:-(\d+))?$/;
const WITH_NOTE = /^(.+?) \(([^()]+)\)$/;

/** One reference; undefined when it is not a file reference. */
export function parseSource(text: string): SourceLink | undefined {
  const label = text.trim().replace(/^`|`$/g, '');
  if (label === '' || /^[a-z][a-z0-9+.-]*:\/\//i.test(label)) {
    return undefined;
  }
  const lines = WITH_LINES.exec(label);
  if (lines) {
    const line = Number(lines[2]);
    const endLine = lines[3] === undefined ? undefined : Number(lines[3]);
    if (line < 1 || (endLine !== undefined && endLine < line)) {
      return undefined;
    }
    return { path: lines[1], line, endLine, label };
  }
  const note = WITH_NOTE.exec(label);
  const path = note ? note[1] : label;
  if (/\s/.test(path) || !/[./\\]/.test(path)) {
    return undefined;
  }
  return { path, line: 1, label };
}

/** The references among a result's `sources`, in order, without repeats. */
export function parseSources(sources: readonly unknown[] | undefined): SourceLink[] {
  const seen = new Set<string>();
  const links: SourceLink[] = [];
  for (const source of sources ?? []) {
    if (typeof source !== 'string') {
      continue;
    }
    const link = parseSource(source);
    if (link && !seen.has(link.label)) {
      seen.add(link.label);
      links.push(link);
    }
  }
  return links;
}

/** `path:line` references written in an answer's text (in backticks or plain), for linking. */
export function findReferences(text: string): SourceLink[] {
  const found: SourceLink[] = [];
  const pattern = /(?:^|[\s`(\[])((?:[\w.-]+[/\\])*[\w.-]+\.[A-Za-z0-9]+:\d+(?:-\d+)?)(?=$|[\s`),.;:\]])/gm;
  for (const match of text.matchAll(pattern)) {
    const link = parseSource(match[1]);
    if (link) {
      found.push(link);
    }
  }
  return found;
}

/** The absolute path of a reference inside a workspace folder; undefined when it leaves the folder. */
export function resolveInFolder(folder: string, link: SourceLink, separator = '/'): string | undefined {
  const isAbsolute = link.path.startsWith('/') || /^[A-Za-z]:[\\/]/.test(link.path);
  if (isAbsolute) {
    return link.path.startsWith(folder + separator) ? link.path : undefined;
  }
  const parts: string[] = [];
  for (const part of link.path.split(/[\\/]/)) {
    if (part === '..') {
      if (parts.pop() === undefined) {
        return undefined;
      }
    } else if (part !== '.' && part !== '') {
      parts.push(part);
    }
  }
  return [folder.replace(/[\\/]+$/, ''), ...parts].join(separator);
}

export interface TextPiece {
  text: string;
  link?: SourceLink;
}

/** An answer's text cut into plain pieces and `path:line` references, for a view that links them. */
export function linkify(text: string): TextPiece[] {
  const pieces: TextPiece[] = [];
  const pattern = /((?:[\w.-]+[/\\])*[\w.-]+\.[A-Za-z0-9]+:\d+(?:-\d+)?)(?=$|[\s`),.;:\]])/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    const start = match.index ?? 0;
    const before = start === 0 ? '' : text[start - 1];
    const link = parseSource(match[1]);
    if (!link || (before !== '' && !/[\s`(\[]/.test(before))) {
      continue;
    }
    if (start > last) {
      pieces.push({ text: text.slice(last, start) });
    }
    pieces.push({ text: match[1], link });
    last = start + match[1].length;
  }
  if (last < text.length) {
    pieces.push({ text: text.slice(last) });
  }
  return pieces;
}
