import assert from 'node:assert/strict';
import { test } from 'node:test';

import { findServerCommand, notFoundMessage, scriptsFolder, serveArguments, splitSetting } from '../src/serverCommand.ts';

const only = (...files: string[]) => (file: string) => files.includes(file);

test('the setting wins, with serve appended when it is not named', () => {
  const found = findServerCommand({ setting: ['/opt/py/bin/python', '-m', 'swarm_lsp'], isExecutable: only(), platform: 'linux' });
  assert.deepEqual(found, { command: '/opt/py/bin/python', args: ['-m', 'swarm_lsp', 'serve'], source: 'setting' });
});

test('a setting that names serve keeps its order; the log file follows', () => {
  const found = findServerCommand({ setting: 'swarm-lsp serve -v', logFile: '/tmp/s.log', isExecutable: only(), platform: 'linux' });
  assert.deepEqual(found?.args, ['serve', '-v', '--log-file', '/tmp/s.log']);
});

test('a blank setting falls through to the Python environment', () => {
  const found = findServerCommand({
    setting: ['  '],
    pythonInterpreter: '/work/.venv/bin/python',
    pathVariable: '/usr/bin',
    isExecutable: only('/work/.venv/bin/swarm-lsp', '/usr/bin/swarm-lsp'),
    platform: 'linux',
  });
  assert.deepEqual(found, { command: '/work/.venv/bin/swarm-lsp', args: ['serve'], source: 'python environment' });
});

test('PATH when the environment has no swarm-lsp; empty PATH entries are skipped', () => {
  const found = findServerCommand({
    setting: undefined,
    pythonInterpreter: '/usr/bin/python3',
    pathVariable: ':/home/u/.local/bin:/usr/bin',
    isExecutable: only('/home/u/.local/bin/swarm-lsp'),
    platform: 'linux',
  });
  assert.equal(found?.source, 'PATH');
  assert.equal(found?.command, '/home/u/.local/bin/swarm-lsp');
});

test('Windows: Scripts folder and .exe', () => {
  assert.equal(scriptsFolder('C:\\venv\\Scripts\\python.exe', 'win32'), 'C:\\venv\\Scripts');
  assert.equal(scriptsFolder('C:\\Python312\\python.exe', 'win32'), 'C:\\Python312\\Scripts');
  const found = findServerCommand({
    setting: [],
    pythonInterpreter: 'C:\\venv\\Scripts\\python.exe',
    isExecutable: only('C:\\venv\\Scripts\\swarm-lsp.exe'),
    platform: 'win32',
  });
  assert.equal(found?.command, 'C:\\venv\\Scripts\\swarm-lsp.exe');
});

test('nothing found: undefined, and the message says where it looked and what to do', () => {
  assert.equal(findServerCommand({ setting: undefined, pathVariable: '/usr/bin', isExecutable: only(), platform: 'linux' }), undefined);
  const message = notFoundMessage('/usr/bin/python3');
  assert.match(message, /beside \/usr\/bin\/python3 and on PATH/);
  assert.match(message, /pip install swarm-lsp/);
  assert.match(message, /swarm-lsp\.server\.command/);
});

test('serve arguments: blank extras dropped', () => {
  assert.deepEqual(serveArguments(['', '-v']), ['serve', '-v']);
  assert.deepEqual(splitSetting(' a  b '), ['a', 'b']);
});
