import assert from 'node:assert/strict';
import { test } from 'node:test';

import { findReferences, linkify, parseSource, parseSources, resolveInFolder } from '../src/sources.ts';

test('path:start-end, path:line and path (outline)', () => {
  assert.deepEqual(parseSource('pkg/util.py:10-14'), { path: 'pkg/util.py', line: 10, endLine: 14, label: 'pkg/util.py:10-14' });
  assert.deepEqual(parseSource('`README.md:3`'), { path: 'README.md', line: 3, endLine: undefined, label: 'README.md:3' });
  assert.deepEqual(parseSource('src/app.py (outline)'), { path: 'src/app.py', line: 1, label: 'src/app.py (outline)' });
});

test('not file references: URLs, prose, line 0, reversed ranges', () => {
  assert.equal(parseSource('https://example.com/a.py:3'), undefined);
  assert.equal(parseSource('the whole file'), undefined);
  assert.equal(parseSource('a.py:0'), undefined);
  assert.equal(parseSource('a.py:9-3'), undefined);
  assert.equal(parseSource(''), undefined);
});

test('a path with a colon in a Windows drive keeps the drive', () => {
  assert.deepEqual(parseSource('C:\\work\\a.py:7')?.path, 'C:\\work\\a.py');
});

test('sources: non-strings skipped, repeats once, order kept', () => {
  const links = parseSources(['b.py:1', 42, 'a.py:2-3', 'b.py:1', 'nonsense']);
  assert.deepEqual(links.map((link) => link.label), ['b.py:1', 'a.py:2-3']);
});

test('references in an answer text', () => {
  const text = 'See `pkg/util.py:10-14` and app.py:3, not http://x.io/a.py:9.\nAlso (lib/x.ts:20).';
  assert.deepEqual(findReferences(text).map((link) => link.label), ['pkg/util.py:10-14', 'app.py:3', 'lib/x.ts:20']);
});

test('resolved inside the folder; a path leaving it is refused', () => {
  assert.equal(resolveInFolder('/w', parseSource('pkg/a.py:1')!), '/w/pkg/a.py');
  assert.equal(resolveInFolder('/w/', parseSource('./pkg/../a.py:1')!), '/w/a.py');
  assert.equal(resolveInFolder('/w', parseSource('../etc/passwd:1')!), undefined);
  assert.equal(resolveInFolder('/w', { path: '/w/x.py', line: 1, label: '' }), '/w/x.py');
  assert.equal(resolveInFolder('/w', { path: '/etc/x.py', line: 1, label: '' }), undefined);
});

test('linkify keeps every character and links only references', () => {
  const text = 'Look at `a/b.py:3-4` then c.py:9. http://h/x.py:1 stays.';
  const pieces = linkify(text);
  assert.equal(pieces.map((piece) => piece.text).join(''), text);
  assert.deepEqual(pieces.filter((piece) => piece.link).map((piece) => piece.text), ['a/b.py:3-4', 'c.py:9']);
  assert.deepEqual(linkify(''), []);
});
