import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Activity, shorten } from '../src/activity.ts';

test('indexing shows its percentage, then the summary goes to the tooltip', () => {
  const activity = new Activity();
  activity.state = 'running';
  activity.apply('t1', { kind: 'begin', title: 'swarm-lsp: indexing demo', percentage: 0 });
  activity.apply('t1', { kind: 'report', message: 'parsed 3/10 files', percentage: 30 });
  assert.equal(activity.indexing, true);
  assert.equal(activity.status().text, '$(sync~spin) swarm-lsp: indexing 30%');
  activity.apply('t1', { kind: 'end', message: '10 files parsed, 0 unchanged' });
  assert.equal(activity.status().text, '$(check) swarm-lsp');
  assert.match(activity.status().tooltip, /last indexing: 10 files parsed/);
});

test('a swarm request shows what the voters do, not their text', () => {
  const activity = new Activity();
  activity.state = 'running';
  activity.apply(7, { kind: 'begin', title: 'swarm-lsp: explain', message: 'retrieving context' });
  activity.apply(7, { kind: 'report', message: '3 voters writing, 57 tokens: def total(items)' });
  assert.equal(activity.status().text, '$(loading~spin) swarm-lsp: 3 voters writing, 57 tokens');
  activity.apply(8, { kind: 'begin', title: 'swarm-lsp: chat' });
  assert.equal(activity.status().text, '$(loading~spin) swarm-lsp: 2 requests');
});

test('reports for unknown tokens are ignored; states without jobs', () => {
  const activity = new Activity();
  activity.apply('x', { kind: 'report', message: 'late' });
  assert.equal(activity.status().text, '$(loading~spin) swarm-lsp: starting');
  activity.state = 'missing';
  assert.match(activity.status().text, /not found/);
  activity.state = 'stopped';
  assert.match(activity.status().text, /stopped/);
});

test('shorten cuts long messages', () => {
  assert.equal(shorten('a'.repeat(50), 10), 'aaaaaaaaa…');
});
