// The chat view's page: renders the conversation, streams the pending answer, sends and stops.
// Talks to the extension with postMessage only (no network); state survives the view being hidden.
(function () {
  const vscode = acquireVsCodeApi();
  const messages = document.getElementById('messages');
  const input = document.getElementById('input');
  const send = document.getElementById('send');
  const stop = document.getElementById('stop');
  let state = vscode.getState() || { turns: [] };
  let pending = null;

  function save() {
    vscode.setState(state);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function sourceLink(link) {
    const anchor = element('a', 'source', link.label);
    anchor.href = '#';
    anchor.title = 'Open ' + link.label;
    anchor.addEventListener('click', (event) => {
      event.preventDefault();
      vscode.postMessage({ type: 'open', link: link });
    });
    return anchor;
  }

  function renderTurn(turn) {
    const box = element('div', 'turn ' + turn.role);
    box.appendChild(element('div', 'who', turn.role === 'user' ? 'You' : 'swarm-lsp'));
    const body = element('div', 'text');
    for (const piece of turn.pieces || [{ text: turn.text || '' }]) {
      body.appendChild(piece.link ? sourceLink(piece.link) : document.createTextNode(piece.text));
    }
    box.appendChild(body);
    if (turn.role === 'answer') {
      const meta = element('div', turn.lowAgreement ? 'meta low' : 'meta');
      const verdict = turn.lowAgreement
        ? 'LOW AGREEMENT ' + turn.agreement.toFixed(2) + ': treat this answer with care'
        : 'agreement ' + turn.agreement.toFixed(2);
      meta.appendChild(element('span', 'agreement', verdict));
      meta.appendChild(element('span', 'how', ' (' + turn.how + ')'));
      box.appendChild(meta);
      if (turn.sources && turn.sources.length > 0) {
        const sources = element('div', 'sources');
        sources.appendChild(element('span', 'label', 'Sources: '));
        turn.sources.forEach((link, index) => {
          if (index > 0) sources.appendChild(document.createTextNode(', '));
          sources.appendChild(sourceLink(link));
        });
        box.appendChild(sources);
      }
    }
    if (turn.role === 'note') box.classList.add('note');
    return box;
  }

  function render() {
    messages.replaceChildren(...state.turns.map(renderTurn));
    if (pending) messages.appendChild(pending);
    messages.scrollTop = messages.scrollHeight;
  }

  function add(turn) {
    state.turns.push(turn);
    save();
    render();
  }

  function setPending(text) {
    if (!pending) {
      pending = element('div', 'turn answer pending');
      pending.appendChild(element('div', 'who', 'swarm-lsp (writing...)'));
      pending.appendChild(element('div', 'text'));
    }
    pending.querySelector('.text').textContent = text;
    render();
  }

  window.addEventListener('message', (event) => {
    const message = event.data;
    switch (message.type) {
      case 'user':
        add({ role: 'user', text: message.text });
        setPending('');
        break;
      case 'chunk':
        setPending(message.text);
        break;
      case 'answer':
        pending = null;
        add({
          role: 'answer',
          pieces: message.pieces,
          agreement: message.agreement,
          lowAgreement: message.lowAgreement,
          how: message.how,
          sources: message.sources,
        });
        break;
      case 'stopped':
        pending = null;
        add({ role: 'note', text: 'Stopped: the answer was cancelled.' });
        break;
      case 'error':
        pending = null;
        add({ role: 'note', text: 'Error: ' + message.message });
        break;
      case 'busy':
        send.disabled = message.busy;
        stop.disabled = !message.busy;
        document.body.dataset.busy = String(message.busy);
        break;
      case 'cleared':
        pending = null;
        state = { turns: [] };
        save();
        render();
        break;
    }
  });

  document.getElementById('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (text === '' || send.disabled) return;
    input.value = '';
    vscode.postMessage({ type: 'send', text: text });
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      document.getElementById('composer').requestSubmit();
    }
  });
  stop.addEventListener('click', () => vscode.postMessage({ type: 'stop' }));
  document.getElementById('new').addEventListener('click', () => vscode.postMessage({ type: 'new' }));
  render();
})();
