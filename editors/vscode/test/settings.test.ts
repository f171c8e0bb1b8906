import assert from 'node:assert/strict';
import { test } from 'node:test';

import { changesServerStart, isSet, snakeCase, toServerSettings } from '../src/settings.ts';

test('camelCase keys become the server snake_case keys, by section', () => {
  assert.deepEqual(
    toServerSettings({ 'model.contextLength': 4096, 'swarm.voters': 3, 'swarm.maxTokens': 200, 'model.name': 'bundled' }),
    { model: { context_length: 4096, name: 'bundled' }, swarm: { voters: 3, max_tokens: 200 } },
  );
  assert.equal(snakeCase('baseUrl'), 'base_url');
});

test('unset values are left to the server: null, undefined and blank strings', () => {
  assert.deepEqual(toServerSettings({ 'model.name': '  ', 'swarm.voters': null, 'swarm.strategy': undefined }), {});
  assert.equal(isSet(0), true);
  assert.equal(isSet(false), true);
  assert.equal(isSet(''), false);
});

test('false, 0 and lists are passed as given; strings are trimmed', () => {
  assert.deepEqual(
    toServerSettings({ 'index.watch': false, 'swarm.voters': 0, 'index.exclude': ['*.log'], 'tools.write': ' deny ' }),
    { index: { watch: false, exclude: ['*.log'] }, swarm: { voters: 0 }, tools: { write: 'deny' } },
  );
});

test('editor-only and unknown keys never reach the server', () => {
  assert.deepEqual(toServerSettings({ 'server.command': ['x'], 'server.logFile': '/tmp/l', 'bogus.key': 1 }), {});
});

test('a change to how the server starts asks for a restart; a model change does not', () => {
  assert.equal(changesServerStart((key) => key === 'swarm-lsp.server.command'), true);
  assert.equal(changesServerStart((key) => key === 'swarm-lsp.model.name'), false);
});
