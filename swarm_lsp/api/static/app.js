// The swarm-lsp dashboard: one Preact + htm page, no build step, no network beyond its own server.
// The JSON it reads is described in the API's dashboard contract (GET /api/status, /api/requests,
// /api/tools, /api/settings, /api/doctor, /api/peers, and the event stream GET /api/events).
import { html, render, useState, useEffect, useRef, useCallback } from './vendor/htm-preact-standalone.mjs';

const TOKEN_KEY = 'swarm-lsp-token';
const MAX_REQUESTS = 50;
const ACTIVE_STATES = ['queued', 'running', 'voting'];
const SINCE_CHOICES = [['', 'all time'], ['600', 'last 10 minutes'], ['3600', 'last hour'], ['86400', 'last day']];
const NO_FILTERS = { tool: '', tier: '', outcome: '', since: '' };
const PEERS_EVERY_MS = 2000;

// ---- talking to the server -------------------------------------------------------------------

// A server bound beyond loopback wants `Authorization: Bearer <token>` on every request. The token
// lives in sessionStorage so that it survives a reload but not the browser session.
function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// Set by the App: any 401 anywhere brings up the token form.
let onUnauthorized = () => {};

class ApiError extends Error {}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) {
    onUnauthorized();
    throw new ApiError('the server wants an access token');
  }
  const reply = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(reply?.error?.message ?? `${method} ${path} answered HTTP ${response.status}`);
  return reply;
}

// A server-sent-events parser for a fetch() body. EventSource would be simpler, but it cannot send
// the Authorization header. Calls `onEvent(type, data)` per event; `:` comment lines are keep-alives.
async function readEventStream(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let type = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // A trailing "\r" may be the first half of a "\r\n" split across chunks: keep it for the next one.
    const lines = buffer.split(/\r\n|\r(?!$)|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (data.length) onEvent(type || 'message', data.join('\n'));
        type = '';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') type = text;
        else if (field === 'data') data.push(text);
      }
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// Follows /api/events until `signal` aborts. When the stream ends or fails it reconnects, waiting
// 1 s and doubling up to 30 s; after a reconnect `onReconnect` reloads what may have been missed.
async function followEvents(signal, handlers, setConnection, onReconnect) {
  let delay = 1000;
  let connections = 0;
  while (!signal.aborted) {
    try {
      const response = await fetch('/api/events', { headers: authHeaders(), signal });
      if (response.status === 401) return onUnauthorized();
      if (!response.ok || !response.body) throw new Error(`/api/events answered HTTP ${response.status}`);
      setConnection('live');
      if (connections++ > 0) onReconnect();
      await readEventStream(response.body, (type, data) => {
        delay = 1000;
        try {
          handlers[type]?.(JSON.parse(data));
        } catch (error) {
          console.warn(`swarm-lsp: bad "${type}" event`, error, data);
        }
      });
    } catch (error) {
      if (signal.aborted) return;
      console.warn('swarm-lsp: event stream', error);
    }
    setConnection('reconnecting');
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 30000);
  }
}

// Newest first, one entry per id, at most MAX_REQUESTS: the same list GET /api/requests returns.
function upsertRequest(requests, request) {
  const others = requests.filter((known) => known.id !== request.id);
  return [request, ...others].sort((a, b) => b.created_at - a.created_at).slice(0, MAX_REQUESTS);
}

function toolQuery(filters) {
  const query = new URLSearchParams(Object.entries(filters).filter(([, value]) => value)).toString();
  return query ? `/api/tools?${query}` : '/api/tools';
}

// ---- formatting ------------------------------------------------------------------------------

function formatBytes(bytes) {
  if (bytes == null) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

const formatEpoch = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : 'never');
const formatNumber = (value, digits = 1) => (value == null ? '–' : Number(value).toFixed(digits));

// The text to type for a value: TOML, which for strings, numbers, booleans and lists is its JSON.
const asSettingText = (value) => (value == null ? '' : JSON.stringify(value));
const asDisplay = (value) => (typeof value === 'string' ? value : JSON.stringify(value));

function truncate(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

// ---- components ------------------------------------------------------------------------------

function Section({ id, title, children }) {
  return html`<section id=${id} data-testid=${id}><h2>${title}</h2>${children}</section>`;
}

function ProgressBar({ value, label }) {
  const fraction = Math.min(Math.max(value ?? 0, 0), 1);
  return html`<span class="progress">
    <progress data-testid="progress" max="1" value=${fraction} aria-label=${label}></progress>
    <span class="progress-text">${Math.round(fraction * 100)}%</span>
  </span>`;
}

function Unavailable({ problem }) {
  return problem ? html`<p class="problem">Unavailable: ${problem}</p>` : html`<p class="muted">Loading…</p>`;
}

function StatusLine({ status, problem }) {
  if (!status) return html`<${Unavailable} problem=${problem} />`;
  const { model, voters, queue } = status;
  const modelText = model.error ? `failed: ${model.error}` : model.loaded ? `${model.name} (${model.backend})` : 'loading';
  return html`<p data-testid="status-line" class="status-line">
    <span>model <strong>${modelText}</strong></span>
    <span>voters ${voters.busy} busy / ${voters.free} free of ${voters.total}</span>
    <span>queue ${queue.running} running, ${queue.waiting} waiting, limit ${queue.limit}</span>
  </p>`;
}

function Workers({ status, requests, problem }) {
  const current = requests.find((request) => ACTIVE_STATES.includes(request.state)) ?? requests[0];
  return html`<${Section} id="workers" title="Workers">
    <${StatusLine} status=${status} problem=${problem} />
    ${current
      ? html`<p class="muted">Request <strong>${current.id}</strong> (${current.state}), ${current.max_tokens} tokens per voter</p>
        <table>
          <thead><tr><th>Voter</th><th>State</th><th>Tokens</th><th>Tokens/s</th><th>Temperature</th><th>Progress</th></tr></thead>
          <tbody>${current.workers.map((worker) => html`<tr key=${worker.index} data-testid="worker">
            <td>${worker.index}</td><td>${worker.state}</td><td>${worker.tokens}</td>
            <td>${formatNumber(worker.tokens_per_s)}</td><td>${formatNumber(worker.temperature, 2)}</td>
            <td><${ProgressBar} value=${worker.progress} label=${`voter ${worker.index}`} /></td>
          </tr>`)}</tbody>
        </table>`
      : html`<p class="muted">No request yet.</p>`}
  </${Section}>`;
}

function Candidate({ candidate }) {
  return html`<li data-testid="candidate" class=${candidate.winner ? 'candidate winner' : 'candidate'}>
    <div class="candidate-head">
      <span>#${candidate.index}</span>
      ${candidate.winner && html`<strong data-testid="winner" class="badge good">winner</strong>`}
      <span>score ${formatNumber(candidate.score, 3)}</span>
      <span>${candidate.votes} votes</span>
      ${candidate.valid
        ? html`<span class="badge">valid</span>`
        : html`<span class="badge bad" title=${candidate.invalid_reason}>invalid: ${candidate.invalid_reason}</span>`}
      <span class="muted">${candidate.finish_reason}</span>
    </div>
    <pre>${candidate.text}</pre>
  </li>`;
}

function RequestResult({ result }) {
  return html`<div class="result">
    <p>
      <span data-testid="agreement">agreement <strong>${formatNumber(result.agreement, 2)}</strong></span>
      ${' · '}strategy ${result.strategy}
      ${result.degraded && html`${' · '}<span class="badge bad">degraded</span>`}
    </p>
    ${result.sources.length > 0 && html`<p>sources: ${result.sources.map((source) => html`<code key=${source}>${source}</code> `)}</p>`}
    ${result.notes.map((note) => html`<p class="muted" key=${note}>${note}</p>`)}
    <ol class="candidates">${result.candidates.map((candidate) => html`<${Candidate} key=${candidate.index} candidate=${candidate} />`)}</ol>
  </div>`;
}

function Requests({ requests, problem }) {
  return html`<${Section} id="requests" title="Requests">
    ${problem && html`<p class="problem">${problem}</p>`}
    ${requests.length === 0 && html`<p class="muted">No request yet.</p>`}
    ${requests.map((request) => html`<article key=${request.id} data-request-id=${request.id} data-testid="request" class="request">
      <header>
        <strong>${request.id}</strong>
        <span>${request.kind}</span><span>${request.model}</span>
        <span class=${`badge state-${request.state}`} data-testid="request-state">${request.state}</span>
        <span class="muted">${formatNumber(request.elapsed_s)} s · ${request.voters} voters · via ${request.door}</span>
      </header>
      <p class="prompt">${request.prompt}</p>
      ${request.error && html`<p class="problem">${request.error}</p>`}
      ${request.result && html`<${RequestResult} result=${request.result} />`}
    </article>`)}
  </${Section}>`;
}

function IndexPanel({ status, problem }) {
  const index = status?.index;
  if (!index) return html`<${Section} id="index" title="Index"><${Unavailable} problem=${problem} /></${Section}>`;
  const embedded = index.chunks ? index.chunks_with_vectors / index.chunks : 0;
  // Without an embedder (full-text search only) there is no backlog to show, unless vectors remain.
  const embedding = index.embedder || index.chunks_with_vectors > 0 || index.embedding_backlog > 0;
  return html`<${Section} id="index" title="Index">
    <dl class="facts">
      <dt>State</dt><dd data-testid="index-state">${index.state}${index.error && html` <span class="problem">${index.error}</span>`}</dd>
      ${index.sync && html`<dt>Sync</dt><dd>${index.sync.phase} ${index.sync.done}/${index.sync.total}
        <${ProgressBar} value=${index.sync.total ? index.sync.done / index.sync.total : 0} label="sync" /></dd>`}
      <dt>Files</dt><dd>${index.files}</dd>
      <dt>Chunks</dt><dd>${index.chunks}</dd>
      <dt>Symbols</dt><dd>${index.symbols}</dd>
      <dt>Embedder</dt><dd>${index.embedder ?? html`none <span class="muted">${index.embedder_note ?? 'full-text search only'}</span>`}</dd>
      ${embedding && html`<dt>Embedded</dt><dd>${index.chunks_with_vectors} of ${index.chunks} chunks, ${index.embedding_backlog} waiting
        <${ProgressBar} value=${embedded} label="embedded chunks" /></dd>`}
      <dt>Last sync</dt><dd>${formatEpoch(index.last_sync)}</dd>
      <dt>Watcher</dt><dd>${index.watching ? 'on' : 'off'}</dd>
      <dt>On disk</dt><dd>${formatBytes(index.disk_bytes)}</dd>
    </dl>
  </${Section}>`;
}

function FilterSelect({ name, label, value, choices, onChange }) {
  // A value the server no longer lists stays selectable, so the select never silently shows "all".
  const options = value && !choices.some(([choice]) => choice === value) ? [...choices, [value, value]] : choices;
  return html`<label>${label}
    <select data-testid=${`filter-${name}`} value=${value} onChange=${(event) => onChange(name, event.currentTarget.value)}>
      ${options.map(([choice, text]) => html`<option key=${choice} value=${choice}>${text}</option>`)}
    </select>
  </label>`;
}

function ToolLog({ log, filters, onFilter, problem }) {
  const everything = (names) => [['', 'all'], ...(names ?? []).map((name) => [name, name])];
  return html`<${Section} id="tools" title="Tool log">
    <form class="filters" onSubmit=${(event) => event.preventDefault()}>
      <${FilterSelect} name="tool" label="Tool" value=${filters.tool} choices=${everything(log?.tools)} onChange=${onFilter} />
      <${FilterSelect} name="tier" label="Tier" value=${filters.tier} choices=${everything(log?.tiers)} onChange=${onFilter} />
      <${FilterSelect} name="outcome" label="Outcome" value=${filters.outcome} choices=${everything(log?.outcomes)} onChange=${onFilter} />
      <${FilterSelect} name="since" label="Since" value=${filters.since} choices=${SINCE_CHOICES} onChange=${onFilter} />
    </form>
    ${!log ? html`<${Unavailable} problem=${problem} />` : html`
      ${problem && html`<p class="problem">${problem}</p>`}
      <p class="muted">${log.entries.length === 1 ? '1 entry' : `${log.entries.length} entries`} from <code>${log.path}</code></p>
      <div class="scroll"><table>
        <thead><tr><th>Time</th><th>Client</th><th>Tool</th><th>Tier</th><th>Outcome</th><th>Duration</th><th>Arguments</th></tr></thead>
        <tbody>${log.entries.map((entry, position) => {
          const args = JSON.stringify(entry.arguments ?? {});
          return html`<tr key=${`${entry.time}-${position}`} data-testid="tool-row">
            <td title=${entry.time}>${new Date(entry.time).toLocaleString()}</td>
            <td>${entry.client}</td>
            <td data-testid="tool-name">${entry.tool}</td>
            <td>${entry.tier}</td>
            <td data-testid="tool-outcome" class=${`outcome-${entry.outcome}`}
              title=${entry.error ?? `${entry.decision} by ${entry.decided_by}`}>${entry.outcome}</td>
            <td>${formatNumber(entry.duration_ms)} ms</td>
            <td><code title=${args}>${truncate(args, 80)}</code></td>
          </tr>`;
        })}</tbody>
      </table></div>`}
  </${Section}>`;
}

function SettingRow({ setting, onSave }) {
  return html`<tr data-testid="setting" data-key=${setting.key}>
    <td><code>${setting.key}</code></td>
    <td data-testid="setting-value"><code>${asDisplay(setting.value)}</code></td>
    <td>${setting.source}${setting.overridden_by && setting.overridden_by !== setting.source
      && html`<br /><span class="problem">overridden by ${setting.overridden_by}</span>`}</td>
    <td>${setting.description}</td>
    <td>${setting.editable && html`<form class="edit" onSubmit=${(event) => onSave(event, setting)}>
      <input name="value" aria-label=${`new value of ${setting.key}`} defaultValue=${asSettingText(setting.value)} />
      <button type="submit">Save</button>
    </form>`}</td>
  </tr>`;
}

function SettingsPanel({ settings, problem, onSaved }) {
  const [outcome, setOutcome] = useState(null);
  async function save(event, setting) {
    event.preventDefault();
    const value = new FormData(event.currentTarget).get('value');
    setOutcome(null);
    try {
      const reply = await api('/api/settings', { method: 'POST', body: { key: setting.key, value } });
      const applies = reply.applies === 'now' ? 'it applies now' : 'it applies after a restart of swarm-lsp api';
      // `value` is the value in effect, which an environment variable may hold apart from the file's.
      setOutcome({ saved: `Saved ${reply.key} in ${reply.file}: it is now ${asDisplay(reply.value)}; ${applies}.`, warning: reply.warning });
      onSaved();
    } catch (error) {
      setOutcome({ error: error.message });
    }
  }
  return html`<${Section} id="settings" title="Settings">
    ${outcome?.error && html`<p role="alert" data-testid="settings-error" class="problem">${outcome.error}</p>`}
    ${outcome?.saved && html`<p role="status" data-testid="settings-saved" class="saved">${outcome.saved}
      ${outcome.warning && html`<br /><strong>${outcome.warning}</strong>`}</p>`}
    ${!settings ? html`<${Unavailable} problem=${problem} />` : html`
      <p class="muted">Saving writes <code>${settings.file}</code>. Type values as TOML (<code>7</code>, <code>true</code>, <code>"text"</code>, <code>["a", "b"]</code>); text without quotes is taken as text.</p>
      <div class="scroll"><table>
        <thead><tr><th>Key</th><th>Value</th><th>Source</th><th>Description</th><th>Change</th></tr></thead>
        <tbody>${settings.settings.map((setting) => html`<${SettingRow}
          key=${`${setting.key}=${asSettingText(setting.value)}`} setting=${setting} onSave=${save} />`)}</tbody>
      </table></div>`}
  </${Section}>`;
}

function PeerRow({ peer, onRemove }) {
  const manual = (peer.sources ?? []).includes('manual');
  return html`<tr data-testid="peer" data-url=${peer.url} class=${`peer-${(peer.status ?? '').replace(/[^a-z]+/g, '-')}`}>
    <td><code>${peer.name ?? peer.url}</code></td>
    <td>${peer.kind}</td>
    <td data-testid="peer-status">${peer.status}${peer.problem && html` <span class="muted">${peer.problem}</span>`}</td>
    <td>${peer.latency_ms == null ? '–' : `${formatNumber(peer.latency_ms, 0)} ms`}</td>
    <td>${peer.load ?? '–'} / ${peer.slots ?? '–'}</td>
    <td>${peer.model || '–'}</td>
    <td>${formatNumber(peer.tokens_per_s)}</td>
    <td>${(peer.sources ?? []).join(', ')}</td>
    <td>${manual && html`<button type="button" data-testid="peer-remove" onClick=${() => onRemove(peer.url)}>remove</button>`}</td>
  </tr>`;
}

function PeersPanel({ peers, problem, onChanged }) {
  const [message, setMessage] = useState('');
  async function add(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const body = { url: form.url.value.trim(), token: form.token.value, kind: form.kind.value };
    try {
      await api('/api/peers', { method: 'POST', body });
      form.reset();
      setMessage(`added ${body.url}`);
    } catch (error) {
      setMessage(error.message);
    }
    onChanged();
  }
  async function remove(url) {
    try {
      await api(`/api/peers?url=${encodeURIComponent(url)}`, { method: 'DELETE' });
      setMessage(`removed ${url}`);
    } catch (error) {
      setMessage(error.message);
    }
    onChanged();
  }
  if (!peers) return html`<${Section} id="peers" title="Peers"><${Unavailable} problem=${problem} /></${Section}>`;
  return html`<${Section} id="peers" title="Peers">
    <p data-testid="federation-state" class="muted">${peers.enabled
      ? `federation on · this machine is ${peers.instance}`
      : 'federation is off (federation.enabled = false): peers are listed, not contacted'}</p>
    ${peers.peers.length === 0 ? html`<p class="muted">no peers yet</p>` : html`<table class="peers">
      <thead><tr><th>peer</th><th>kind</th><th>status</th><th>latency</th><th>load</th><th>model</th><th>tokens/s</th><th>found by</th><th></th></tr></thead>
      <tbody>${peers.peers.map((peer) => html`<${PeerRow} key=${peer.url} peer=${peer} onRemove=${remove} />`)}</tbody>
    </table>`}
    <form class="edit" data-testid="peer-form" onSubmit=${add}>
      <input name="url" placeholder="http://host:17615" required />
      <input name="token" type="password" placeholder="engine API key (optional)" autocomplete="off" />
      <select name="kind"><option value="auto">auto</option><option value="swarm">swarm-lsp</option><option value="engine">engine</option></select>
      <button type="submit">add peer</button>
    </form>
    ${message && html`<p data-testid="peer-message" class="muted">${message}</p>`}
  </${Section}>`;
}

function Hardware({ doctor, problem }) {
  if (!doctor) return html`<${Section} id="hardware" title="Hardware"><${Unavailable} problem=${problem} /></${Section}>`;
  const { hardware = {}, backends = {}, configured = {}, recommendation = {} } = doctor;
  const gpus = hardware.gpus?.length ? hardware.gpus.map((gpu) => gpu.name ?? JSON.stringify(gpu)).join(', ') : 'none';
  return html`<${Section} id="hardware" title="Hardware">
    <dl class="facts">
      <dt>Machine</dt><dd data-testid="machine">${hardware.os} ${hardware.arch}, ${hardware.physical_cores} cores
        (${hardware.logical_cores} threads), ${formatBytes(hardware.ram_total)} RAM
        (${formatBytes(hardware.ram_available)} available), accelerator ${hardware.accelerator}, GPUs: ${gpus}</dd>
      <dt>Backends</dt><dd>${Object.entries(backends).map(([name, available]) =>
        html`<span key=${name} class=${available ? 'badge good' : 'badge bad'}>${name}${available ? '' : ' (missing)'}</span> `)}</dd>
      <dt>Configured model</dt><dd data-testid="configured">${configured.resolved ?? configured.name} on ${configured.backend},
        context ${configured.context}, ${configured.voters} voters, ${configured.fits ? 'fits in memory' : 'does NOT fit in memory'}
        ${configured.why && html`<span class="muted"> (${configured.why})</span>`}</dd>
      <dt>Memory</dt><dd data-testid="memory"><strong>${formatBytes(configured.memory?.total)}</strong>
        <span class="muted"> of a ${formatBytes(configured.budget)} budget</span><br /><code>${configured.memory?.explained}</code></dd>
      <dt>Recommended</dt><dd data-testid="recommendation">
        ${`${recommendation.model} ${recommendation.quant} (${recommendation.format}), context ${recommendation.context}, `}
        ${`${recommendation.voters} voters, ${recommendation.on_disk ? 'on disk' : 'not downloaded'}`}
        <ul>${(recommendation.reasons ?? []).map((reason) => html`<li key=${reason}>${reason}</li>`)}</ul></dd>
    </dl>
  </${Section}>`;
}

function TokenForm({ onToken }) {
  return html`<form class="token" data-testid="token-form" onSubmit=${(event) => {
    event.preventDefault();
    onToken(new FormData(event.currentTarget).get('token').trim());
  }}>
    <label>This server wants its access token (printed by <code>swarm-lsp api</code> when it starts):
      <input name="token" type="password" autocomplete="off" required />
    </label>
    <button type="submit">Use token</button>
  </form>`;
}

// ---- the page --------------------------------------------------------------------------------

function App() {
  const [status, setStatus] = useState(null);
  const [requests, setRequests] = useState([]);
  const [toolLog, setToolLog] = useState(null);
  const [toolFilters, setToolFilters] = useState(NO_FILTERS);
  const [settings, setSettings] = useState(null);
  const [doctor, setDoctor] = useState(null);
  const [peers, setPeers] = useState(null);
  const [problems, setProblems] = useState({});
  const [needsToken, setNeedsToken] = useState(false);
  const [connection, setConnection] = useState('connecting');
  // Bumped when a token is entered: every load and the event stream start again with it.
  const [session, setSession] = useState(0);

  onUnauthorized = () => setNeedsToken(true);

  const load = useCallback((name, path, store) => api(path).then(
    (reply) => { store(reply); setProblems((known) => ({ ...known, [name]: null })); },
    (error) => setProblems((known) => ({ ...known, [name]: error.message })),
  ), []);

  // The event handler outlives renders, so it reads the filters through a ref; a ticket makes sure a
  // slow answer for old filters never replaces the answer for the current ones.
  const filtersNow = useRef(toolFilters);
  filtersNow.current = toolFilters;
  const toolTicket = useRef(0);
  const loadTools = useCallback(() => {
    const ticket = ++toolTicket.current;
    return load('tools', toolQuery(filtersNow.current), (log) => ticket === toolTicket.current && setToolLog(log));
  }, [load]);

  const loadLive = useCallback(() => {
    load('status', '/api/status', setStatus);
    load('requests', '/api/requests', (reply) => setRequests(reply.requests));
    loadTools();
  }, [load, loadTools]);
  const loadSettings = useCallback(() => load('settings', '/api/settings', setSettings), [load]);
  const loadPeers = useCallback(() => load('peers', '/api/peers', setPeers), [load]);

  useEffect(() => {
    loadLive();
    loadSettings();
    load('doctor', '/api/doctor', setDoctor);
  }, [session]);

  useEffect(() => { loadTools(); }, [toolFilters]);

  // Peers change by health checks and discovery, not by requests: read them every few seconds.
  useEffect(() => {
    loadPeers();
    const timer = setInterval(loadPeers, PEERS_EVERY_MS);
    return () => clearInterval(timer);
  }, [session]);

  useEffect(() => {
    const stop = new AbortController();
    const handlers = {
      request: (request) => setRequests((known) => upsertRequest(known, request)),
      status: setStatus,
      tools: () => loadTools(),
    };
    followEvents(stop.signal, handlers, setConnection, loadLive);
    return () => stop.abort();
  }, [session]);

  function acceptToken(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    setNeedsToken(false);
    setSession((count) => count + 1);
  }

  return html`
    <header class="top">
      <h1>swarm-lsp</h1>
      <span class="muted">${status ? `${status.version} · ${status.workspace}` : ''}</span>
      <span data-testid="connection" class=${`badge connection-${connection}`}>${connection}</span>
    </header>
    ${needsToken && html`<${TokenForm} onToken=${acceptToken} />`}
    <main>
      <${Workers} status=${status} requests=${requests} problem=${problems.status} />
      <${IndexPanel} status=${status} problem=${problems.status} />
      <${Requests} requests=${requests} problem=${problems.requests} />
      <${ToolLog} log=${toolLog} filters=${toolFilters} problem=${problems.tools}
        onFilter=${(name, value) => setToolFilters((known) => ({ ...known, [name]: value }))} />
      <${PeersPanel} peers=${peers} problem=${problems.peers} onChanged=${loadPeers} />
      <${SettingsPanel} settings=${settings} problem=${problems.settings} onSaved=${loadSettings} />
      <${Hardware} doctor=${doctor} problem=${problems.doctor} />
    </main>`;
}

render(html`<${App} />`, document.getElementById('app'));
