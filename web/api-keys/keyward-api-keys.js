// <keyward-api-keys>: the API-keys settings page as a custom element.
//
// It learns the profile's API (routes, JSON field names, scope catalog,
// toggles, labels, error texts) from keyward's `config.json` beside this
// module, and calls only keyward's own key-management routes, with the
// token its `tokenProvider` callback returns (asked before every call, so
// the embedding product may renew it). Light DOM, so the product's page
// styles and test tools reach it; every class starts with `kw-`.
//
// The secret of a new key: shown once in a dialog, copied from a closure
// variable, and on close removed from the DOM and dropped from memory. It
// is never written to localStorage, sessionStorage, a cookie or the URL.
//
// Everything user-supplied (key names, scope names) goes into the DOM as
// text nodes, never as HTML.

const BASE = new URL('..', import.meta.url);
const VERBS = new Set(['read', 'write', 'delete', 'admin', 'manage', 'create', 'update']);
const DAY_MS = 86400000;
let instances = 0;

/** An element, its attributes (`on*` are listeners) and children. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'text') element.textContent = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function humanize(text) {
  const spaced = text.replace(/[_-]+/g, ' ');
  return spaced.charAt(0).toUpperCase() + spaced.slice(1);
}

/** An error in the product's words. */
class PageError extends Error {
  constructor(kind, message, detail) {
    super(message);
    this.kind = kind;
    this.detail = detail;
  }
}

class KeywardApiKeys extends HTMLElement {
  constructor() {
    super();
    this._tokenProvider = null;
    this.account = null;
    this.signOut = null;
    this._config = null;
    this._keys = [];
    this._page = 0;
    this._id = `kw${++instances}`;
  }

  /** `async () => token`: the signed-in user's JWT (or a service token). */
  get tokenProvider() {
    return this._tokenProvider;
  }

  set tokenProvider(provider) {
    this._tokenProvider = provider;
    if (provider && this.isConnected) this.start();
  }

  connectedCallback() {
    // Embedded on a product's page: bring the stylesheets along once.
    for (const name of ['theme.css', 'api-keys.css']) {
      const href = new URL(`assets/${name}`, BASE).href;
      if (![...document.styleSheets].some((sheet) => sheet.href === href)
          && !document.querySelector(`link[data-kw-style="${name}"]`)) {
        document.head.append(h('link', { rel: 'stylesheet', href, 'data-kw-style': name }));
      }
    }
    if (this._tokenProvider) this.start();
  }

  loadConfig() {
    if (!this._configLoad) {
      this._configLoad = fetch(new URL('config.json', BASE), { credentials: 'omit' })
        .then((response) => {
          if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
          return response.json();
        });
    }
    return this._configLoad;
  }

  async start() {
    try {
      this._config = await this.loadConfig();
    } catch {
      this.replaceChildren(h('p', { class: 'kw-error', role: 'alert', text: 'The API keys page could not load. Reload to try again.' }));
      return;
    }
    this._page = 0;
    this._render();
    const focus = document.activeElement;
    await this.refresh();
    // Keyboard users start at the heading, unless the product's page has
    // put focus somewhere else meanwhile.
    if (!focus || focus === document.body || this.contains(focus) || document.activeElement === document.body) {
      this._heading.focus();
    }
  }

  // ----- the API ---------------------------------------------------------

  _errorText(kind) {
    return this._config.errors.find((error) => error.kind === kind);
  }

  async _call(operation, { id = null, body = null, query = '' } = {}) {
    const config = this._config;
    const route = config.routes[operation];
    if (!route) throw new PageError('invalid', `This product does not offer “${operation}”.`);
    let path = route.path;
    if (id !== null) path = path.replace('{key_id}', encodeURIComponent(id));
    const url = new URL(path + query, BASE);
    const unavailable = this._errorText('unavailable');
    let token;
    try {
      token = await this._tokenProvider();
    } catch {
      const text = this._errorText('unauthenticated');
      throw new PageError('unauthenticated', text.message);
    }
    const headers = { authorization: `Bearer ${token}` };
    if (this.account) headers[config.account_header] = this.account;
    if (body !== null) headers['content-type'] = 'application/json';
    let response;
    try {
      response = await fetch(url, {
        method: route.method,
        headers,
        body: body === null ? undefined : JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
        referrerPolicy: 'no-referrer',
      });
    } catch {
      throw new PageError('unavailable', unavailable.message);
    }
    token = null;
    let json = null;
    try {
      json = await response.json();
    } catch {
      json = null;
    }
    if (response.ok) return json;
    // The profile's error body: {"error": {"code", "message"}} or
    // {"code", "detail"}. Matched to the profile's own text by code and
    // status; what keyward adds (which field was wrong) only for bad input.
    const code = json?.error?.code ?? json?.code ?? null;
    const said = json?.error?.message ?? json?.detail ?? null;
    const known = config.errors.find((error) => error.code === code && error.status === response.status)
      ?? config.errors.find((error) => error.status === response.status)
      ?? unavailable;
    const detail = known.kind === 'invalid' && typeof said === 'string' ? said : null;
    throw new PageError(known.kind, known.message, detail);
  }

  // ----- the page --------------------------------------------------------

  _render() {
    const config = this._config;
    const id = this._id;
    this._heading = h('h2', { class: 'kw-title', id: `${id}-heading`, tabindex: '-1', text: config.title });
    this._usage = h('p', { class: 'kw-muted kw-usage', id: `${id}-usage`, 'data-kw': 'usage' });
    this._createButton = h('button', {
      type: 'button',
      class: 'kw-button kw-primary',
      'data-kw': 'create',
      'aria-describedby': `${id}-usage`,
      onclick: () => this._openCreate(),
      text: config.labels.create,
    });
    this._notice = h('p', { class: 'kw-notice', role: 'status', 'data-kw': 'notice' });
    this._error = h('div', { class: 'kw-error', role: 'alert', 'data-kw': 'error', hidden: true });
    this._list = h('div', { class: 'kw-list', 'data-kw': 'list', 'aria-busy': 'true' });
    this._pager = h('nav', { class: 'kw-pager', 'aria-label': 'Pages of keys', hidden: true });
    const header = h('div', { class: 'kw-header' },
      h('div', {}, this._heading, this._usage),
      config.routes.create ? this._createButton : null);
    this.replaceChildren(h('section', { class: 'kw', 'aria-labelledby': `${id}-heading` },
      header, this._error, this._notice, this._list, this._pager));
  }

  _say(text) {
    this._notice.textContent = text;
  }

  _showError(error) {
    this._error.replaceChildren();
    if (!(error instanceof PageError)) {
      error = new PageError('unavailable', this._errorText('unavailable').message);
    }
    this._error.append(h('p', { text: error.detail ? `${error.message} (${error.detail})` : error.message }));
    if (error.kind === 'unauthenticated' && this.signOut) {
      this._error.append(h('button', {
        type: 'button', class: 'kw-button', 'data-kw': 'sign-in', onclick: () => this.signOut(), text: 'Sign in again',
      }));
    }
    this._error.hidden = false;
  }

  async refresh() {
    const config = this._config;
    this._list.setAttribute('aria-busy', 'true');
    try {
      const query = config.fields.revoked_at ? '?include_revoked=true' : '';
      const keys = await this._call('list', { query });
      this._keys = Array.isArray(keys) ? keys : [];
      this._error.hidden = true;
    } catch (error) {
      this._keys = [];
      this._showError(error);
      this._list.replaceChildren();
      this._list.setAttribute('aria-busy', 'false');
      this._usage.textContent = '';
      return;
    }
    const rank = { active: 0, expiring: 0, expired: 1, revoked: 2 };
    const created = (key) => this._field(key, 'created_at') ?? '';
    this._keys.sort((a, b) => (rank[this._status(a)] - rank[this._status(b)])
      || created(b).localeCompare(created(a)));
    this._renderList();
  }

  _field(key, name) {
    const field = this._config.fields[name];
    return field ? key[field] ?? null : null;
  }

  _status(key) {
    if (this._field(key, 'revoked_at')) return 'revoked';
    const expires = this._field(key, 'expires_at');
    if (expires) {
      const left = Date.parse(expires) - Date.now();
      if (left <= 0) return 'expired';
      if (left <= this._config.expiring_days * DAY_MS) return 'expiring';
    }
    return 'active';
  }

  _activeCount() {
    return this._keys.filter((key) => ['active', 'expiring'].includes(this._status(key))).length;
  }

  _renderList() {
    const config = this._config;
    const active = this._activeCount();
    const limit = config.max_active_per_account;
    const full = active >= limit;
    this._usage.textContent = full
      ? `${active} of ${limit} active keys: the limit. Revoke a key to create another.`
      : `${active} of ${limit} active keys`;
    this._createButton.disabled = full;
    this._list.setAttribute('aria-busy', 'false');
    if (this._keys.length === 0) {
      this._list.replaceChildren(h('p', { class: 'kw-empty', 'data-kw': 'empty' },
        'No API keys yet. ',
        config.routes.create ? `Use “${config.labels.create}” to make one.` : ''));
      this._pager.hidden = true;
      return;
    }
    const size = config.page_size;
    const pages = Math.ceil(this._keys.length / size);
    this._page = Math.min(this._page, pages - 1);
    const shown = this._keys.slice(this._page * size, (this._page + 1) * size);
    const columns = [config.labels.name, 'Scopes'];
    if (config.fields.created_at) columns.push('Created');
    if (config.fields.last_used_at) columns.push('Last used');
    if (config.fields.expires_at) columns.push('Expires');
    columns.push('Status');
    for (const toggle of config.toggles) columns.push(toggle.label);
    columns.push('Actions');
    const table = h('table', { class: 'kw-table' },
      h('caption', { class: 'kw-visually-hidden', text: config.title }),
      h('thead', {}, h('tr', {}, columns.map((column) => h('th', { scope: 'col', text: column })))),
      h('tbody', {}, shown.map((key) => this._row(key))));
    this._list.replaceChildren(table);
    this._renderPager(pages);
  }

  _renderPager(pages) {
    if (pages <= 1) {
      this._pager.hidden = true;
      this._pager.replaceChildren();
      return;
    }
    const go = (page) => {
      this._page = page;
      this._renderList();
      this._pager.querySelector(`[data-kw="${page > 0 ? 'previous' : 'next'}"]`)?.focus();
    };
    this._pager.hidden = false;
    this._pager.replaceChildren(
      h('button', { type: 'button', class: 'kw-button', 'data-kw': 'previous', disabled: this._page === 0, onclick: () => go(this._page - 1), text: 'Previous' }),
      h('span', { 'aria-live': 'polite', text: `Page ${this._page + 1} of ${pages}` }),
      h('button', { type: 'button', class: 'kw-button', 'data-kw': 'next', disabled: this._page >= pages - 1, onclick: () => go(this._page + 1), text: 'Next' }));
  }

  _date(iso, never) {
    if (!iso) return h('span', { class: 'kw-muted', text: never });
    const at = new Date(iso);
    return h('time', {
      datetime: iso,
      title: at.toLocaleString(),
      text: at.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' }),
    });
  }

  _row(key) {
    const config = this._config;
    const name = this._field(key, 'name') ?? '';
    const start = this._field(key, 'start');
    const status = this._status(key);
    const cells = [];
    const cell = (label, ...content) => h('td', { 'data-label': label }, ...content);
    cells.push(h('th', { scope: 'row', 'data-label': config.labels.name },
      h('span', { class: 'kw-name', text: name }),
      start ? h('code', { class: 'kw-start', title: 'The key starts with this', text: `${start}…` }) : null));
    cells.push(cell('Scopes', this._scopeList(this._field(key, 'scopes'))));
    if (config.fields.created_at) cells.push(cell('Created', this._date(this._field(key, 'created_at'), '—')));
    if (config.fields.last_used_at) cells.push(cell('Last used', this._date(this._field(key, 'last_used_at'), 'Never')));
    if (config.fields.expires_at) cells.push(cell('Expires', this._date(this._field(key, 'expires_at'), 'Never')));
    cells.push(cell('Status', h('span', { class: `kw-status kw-status-${status}`, 'data-kw': 'status', text: humanize(status) })));
    for (const toggle of config.toggles) {
      const on = key[toggle.field] === true;
      if (config.routes.update && status !== 'revoked' && status !== 'expired') {
        cells.push(cell(toggle.label, h('button', {
          type: 'button',
          role: 'switch',
          class: 'kw-switch',
          'aria-checked': on ? 'true' : 'false',
          'aria-label': `${toggle.label}: ${name}`,
          'data-kw': `toggle-${toggle.field}`,
          onclick: (event) => this._toggle(key, toggle, !on, event.currentTarget),
        }, h('span', { class: 'kw-switch-text', text: on ? 'On' : 'Off' }))));
      } else {
        cells.push(cell(toggle.label, on ? 'On' : 'Off'));
      }
    }
    const actions = [];
    if (config.routes.rotate && (status === 'active' || status === 'expiring')) {
      actions.push(h('button', {
        type: 'button',
        class: 'kw-button',
        'data-kw': 'rotate',
        'aria-label': `Rotate ${name}`,
        onclick: (event) => this._confirmRotate(key, event.currentTarget),
        text: 'Rotate',
      }));
    }
    if (config.routes.revoke && status !== 'revoked') {
      actions.push(h('button', {
        type: 'button',
        class: 'kw-button kw-danger',
        'data-kw': 'revoke',
        'aria-label': `Revoke ${name}`,
        onclick: (event) => this._confirmRevoke(key, event.currentTarget),
        text: 'Revoke',
      }));
    }
    cells.push(cell('Actions', h('div', { class: 'kw-row-actions' }, ...actions)));
    return h('tr', { 'data-kw': 'key', 'data-key-id': this._field(key, 'id') ?? '', 'data-status': status }, cells);
  }

  // ----- scopes ----------------------------------------------------------

  /** `{resource, level}` of a scope name, as the catalog shapes it. */
  _parts(name) {
    const at = name.indexOf(':');
    if (at < 0) return { resource: null, level: name };
    const [left, right] = [name.slice(0, at), name.slice(at + 1)];
    if (this._config.scopes_shape === 'names' && VERBS.has(left) && !VERBS.has(right)) {
      return { resource: right, level: left };
    }
    return { resource: left, level: right };
  }

  _scopeLabel(name) {
    const { resource, level } = this._parts(name);
    return resource ? `${humanize(resource)}: ${level}` : humanize(level);
  }

  _description(name) {
    return this._config.scopes.find((scope) => scope.name === name)?.description ?? '';
  }

  /** A key's scopes as the catalog names them (a preset's label when the
   * key holds exactly a preset). */
  _scopeList(value) {
    const config = this._config;
    let items = [];
    if (value && !Array.isArray(value) && typeof value === 'object') {
      items = Object.entries(value).map(([resource, level]) => ({
        text: `${humanize(resource)}: ${level}`, title: this._description(`${resource}:${level}`),
      }));
    } else if (Array.isArray(value)) {
      const toggled = new Set(config.toggles.map((toggle) => toggle.scope));
      const automatic = new Set(config.scopes.filter((scope) => scope.auto_grant).map((scope) => scope.name));
      const chosen = value.filter((name) => !automatic.has(name) && !toggled.has(name)).sort();
      const preset = config.presets.find((candidate) => {
        const scopes = candidate.scopes.filter((name) => !automatic.has(name)).sort();
        return scopes.length === chosen.length && scopes.every((name, i) => name === chosen[i]);
      });
      if (preset && chosen.length > 0) {
        items = [{ text: preset.label, title: preset.description }];
      } else {
        // What every key holds shows too (CSBoard's read), once.
        const shown = [...new Set([...value, ...automatic])].filter((name) => !toggled.has(name));
        items = shown.map((name) => ({ text: this._scopeLabel(name), title: this._description(name) }));
      }
    }
    if (items.length === 0) return h('span', { class: 'kw-muted', text: 'None' });
    return h('ul', { class: 'kw-scopes', 'data-kw': 'scopes' },
      items.map((item) => h('li', { title: item.title || null, text: item.text })));
  }

  /** The scope picker of the create dialog, shaped like the catalog:
   * resource rows of levels, or presets plus scopes one by one. */
  _scopePicker() {
    const config = this._config;
    const id = this._id;
    const toggled = new Set(config.toggles.map((toggle) => toggle.scope));
    const choosable = config.scopes.filter((scope) => !scope.auto_grant && !toggled.has(scope.name));
    const automatic = config.scopes.filter((scope) => scope.auto_grant);
    const parts = [];
    const read = [];
    if (automatic.length > 0) {
      parts.push(h('p', { class: 'kw-muted' }, 'Every key gets: ',
        automatic.map((scope) => this._scopeLabel(scope.name)).join(', '), '.'));
    }
    if (choosable.length === 0) return { element: h('div', {}, parts), read: () => ({}) };
    // Group by resource, in catalog order.
    const groups = new Map();
    for (const scope of choosable) {
      const { resource, level } = this._parts(scope.name);
      const key = resource ?? scope.name;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push({ scope, level });
    }
    const soon = (scope) => (scope.reserved ? ' (coming soon)' : '');
    const custom = h('div', { class: 'kw-scope-grid', 'data-kw': 'custom-scopes' });
    let n = 0;
    if (config.scopes_shape === 'levels') {
      for (const [resource, levels] of groups) {
        const name = `${id}-level-${n++}`;
        const description = levels.map(({ scope }) => scope.description).join('; ');
        const descriptionId = `${name}-description`;
        custom.append(h('fieldset', { class: 'kw-scope-row', 'aria-describedby': descriptionId },
          h('legend', { text: humanize(resource) }),
          h('p', { class: 'kw-muted kw-small', id: descriptionId, text: description }),
          h('div', { class: 'kw-choices' },
            [{ level: 'none', scope: null }, ...levels].map(({ level, scope }) => h('label', { class: 'kw-choice' },
              h('input', { type: 'radio', name, value: level, checked: level === 'none', 'data-resource': resource }),
              ` ${humanize(level)}${scope ? soon(scope) : ''}`)))));
      }
      read.push(() => {
        const levels = {};
        for (const input of custom.querySelectorAll('input[type=radio]:checked')) {
          if (input.value !== 'none') levels[input.dataset.resource] = input.value;
        }
        return levels;
      });
    } else {
      for (const [resource, levels] of groups) {
        const descriptionId = `${id}-scopes-${n++}`;
        custom.append(h('fieldset', { class: 'kw-scope-row', 'aria-describedby': descriptionId },
          h('legend', { text: humanize(resource) }),
          h('p', { class: 'kw-muted kw-small', id: descriptionId, text: levels.map(({ scope }) => scope.description).join('; ') }),
          h('div', { class: 'kw-choices' },
            levels.map(({ scope, level }) => h('label', { class: 'kw-choice' },
              h('input', { type: 'checkbox', value: scope.name }),
              ` ${humanize(level)}${soon(scope)}`)))));
      }
      read.push(() => [...custom.querySelectorAll('input[type=checkbox]:checked')].map((input) => input.value));
    }
    if (config.presets.length === 0) {
      parts.push(h('fieldset', { class: 'kw-fieldset' }, h('legend', { text: 'Scopes' }), custom));
      return { element: h('div', {}, parts), read: () => ({ scopes: read[0]() }) };
    }
    // Presets, then "Custom" opening the scopes one by one.
    const name = `${id}-preset`;
    const options = [...config.presets.map((preset) => ({ value: preset.name, label: preset.label, description: preset.description })),
      { value: '', label: config.labels.custom, description: 'Pick exactly which scopes to grant.' }];
    const radios = options.map((option, i) => h('label', { class: 'kw-choice kw-preset' },
      h('input', { type: 'radio', name, value: option.value, checked: i === 0, 'data-kw': `preset-${option.value || 'custom'}`, onchange: () => { custom.hidden = option.value !== ''; } }),
      h('span', {}, h('strong', { text: option.label }),
        option.description && option.description !== option.label ? h('span', { class: 'kw-muted kw-small kw-block', text: option.description }) : null)));
    custom.hidden = true;
    parts.push(h('fieldset', { class: 'kw-fieldset' }, h('legend', { text: 'Access' }), radios, custom));
    const form = parts;
    return {
      element: h('div', {}, form),
      read: () => {
        const chosen = radios.map((label) => label.querySelector('input')).find((input) => input.checked)?.value ?? '';
        if (chosen === '') return { scopes: read[0]() };
        const preset = config.presets.find((candidate) => candidate.name === chosen);
        return config.fields.preset ? { preset: chosen } : { scopes: preset.scopes };
      },
    };
  }

  // ----- create ----------------------------------------------------------

  _openCreate() {
    const config = this._config;
    const id = this._id;
    const left = config.max_active_per_account - this._activeCount();
    const picker = this._scopePicker();
    const error = h('div', { class: 'kw-error', role: 'alert', hidden: true });
    const nameInput = h('input', { id: `${id}-name`, name: 'name', type: 'text', required: true, maxlength: 200, autocomplete: 'off', 'data-kw': 'name', autofocus: true });
    const toggles = config.toggles.map((toggle) => {
      const input = h('input', { type: 'checkbox', 'data-kw': `create-toggle-${toggle.field}` });
      return { toggle, input, element: h('label', { class: 'kw-choice' }, input, ` ${toggle.label}`, toggle.description ? h('span', { class: 'kw-muted kw-small kw-block', text: toggle.description }) : null) };
    });
    let expiry = null;
    if (config.fields.expires_at) {
      expiry = h('select', { id: `${id}-expiry`, 'data-kw': 'expiry' },
        [['', 'Never'], ['7', 'In 7 days'], ['30', 'In 30 days'], ['90', 'In 90 days'], ['365', 'In a year']]
          .map(([value, text]) => h('option', { value, text })));
    }
    const submit = h('button', { type: 'submit', class: 'kw-button kw-primary', 'data-kw': 'submit', text: config.labels.create });
    const cancel = h('button', { type: 'button', class: 'kw-button', 'data-kw': 'cancel', text: 'Cancel', onclick: () => dialog.close() });
    const form = h('form', { method: 'dialog', class: 'kw-form', novalidate: true },
      h('h2', { class: 'kw-title', id: `${id}-create-title`, text: config.labels.create }),
      h('p', { class: 'kw-muted', text: `You can create ${left} more active ${left === 1 ? 'key' : 'keys'} (at most ${config.max_active_per_account}).` }),
      error,
      h('p', { class: 'kw-field' }, h('label', { for: `${id}-name`, text: config.labels.name }), nameInput),
      picker.element,
      toggles.map((toggle) => toggle.element),
      expiry ? h('p', { class: 'kw-field' }, h('label', { for: `${id}-expiry`, text: 'Expires' }), expiry) : null,
      h('div', { class: 'kw-actions' }, cancel, submit));
    const dialog = h('dialog', { class: 'kw-dialog', 'aria-labelledby': `${id}-create-title`, 'data-kw': 'create-dialog' }, form);
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (!this._secretOpen) this._createButton.focus();
    });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.hidden = true;
      const name = nameInput.value.trim();
      if (!name) {
        error.replaceChildren(h('p', { text: `${config.labels.name} is required.` }));
        error.hidden = false;
        nameInput.setAttribute('aria-invalid', 'true');
        nameInput.focus();
        return;
      }
      const body = { [config.fields.name]: name };
      const chosen = picker.read();
      if (chosen.preset !== undefined) body[config.fields.preset] = chosen.preset;
      if (chosen.scopes !== undefined && config.fields.scopes) body[config.fields.scopes] = chosen.scopes;
      for (const { toggle, input } of toggles) body[toggle.field] = input.checked;
      if (expiry && expiry.value) {
        const at = new Date(Date.now() + Number(expiry.value) * DAY_MS);
        body[config.fields.expires_at] = at.toISOString().replace(/\.\d{3}Z$/, 'Z');
      }
      submit.disabled = true;
      submit.setAttribute('aria-busy', 'true');
      let created;
      try {
        created = await this._call('create', { body });
      } catch (failure) {
        submit.disabled = false;
        submit.removeAttribute('aria-busy');
        error.replaceChildren(h('p', { text: failure.detail ? `${failure.message} (${failure.detail})` : failure.message }));
        error.hidden = false;
        error.focus?.();
        return;
      }
      const secret = created?.[config.fields.secret];
      if (created) delete created[config.fields.secret];
      this._secretOpen = true;
      dialog.close();
      this._showSecret(name, secret, `Key “${name}” created. Its secret is no longer shown.`);
    });
    this.append(dialog);
    dialog.showModal();
    nameInput.focus();
  }

  /** The secret, once. On close the dialog leaves the DOM and the only
   * variable holding the secret is cleared. */
  _showSecret(name, secretValue, afterwards) {
    const config = this._config;
    const id = this._id;
    // One variable holds it; the parameter is cleared, so the closures
    // below keep no second copy alive after `secret = null`.
    let secret = secretValue;
    secretValue = null;
    const copied = h('span', { class: 'kw-muted', role: 'status', 'data-kw': 'copied' });
    const code = h('code', { class: 'kw-secret', id: `${id}-secret`, 'data-kw': 'secret', tabindex: '0', text: secret });
    const copy = h('button', {
      type: 'button',
      class: 'kw-button',
      'data-kw': 'copy',
      autofocus: true,
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(secret);
          copied.textContent = 'Copied.';
        } catch {
          // No clipboard access (an iframe without the permission): select
          // the text so Ctrl+C copies it.
          const range = document.createRange();
          range.selectNodeContents(code);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          copied.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
        }
      },
      text: 'Copy key',
    });
    const done = h('button', { type: 'button', class: 'kw-button kw-primary', 'data-kw': 'done', text: 'I have copied it', onclick: () => dialog.close() });
    const dialog = h('dialog', { class: 'kw-dialog', 'aria-labelledby': `${id}-secret-title`, 'aria-describedby': `${id}-secret-warning`, 'data-kw': 'secret-dialog' },
      h('h2', { class: 'kw-title', id: `${id}-secret-title`, text: 'Copy your new key' }),
      h('p', { class: 'kw-warning', id: `${id}-secret-warning` },
        h('strong', { text: 'This is the only time the key is shown. ' }),
        `Copy it now and keep it in a secrets manager. ${config.product} stores only a hash of it: if you lose it, revoke it and create a new one.`),
      h('p', { class: 'kw-field' }, h('label', { for: `${id}-secret`, text: `Key “${name}”` }), code),
      h('div', { class: 'kw-actions' }, copy, copied, done));
    dialog.addEventListener('close', () => {
      code.textContent = '';
      secret = null;
      dialog.remove();
      this._secretOpen = false;
      window.getSelection()?.removeAllRanges();
      this._say(afterwards);
      this.refresh().then(() => this._createButton.focus());
    });
    this.append(dialog);
    dialog.showModal();
    copy.focus();
  }

  // ----- revoke and toggles ------------------------------------------------

  _confirmRevoke(key, opener) {
    const id = this._id;
    const name = this._field(key, 'name') ?? '';
    const start = this._field(key, 'start');
    const error = h('div', { class: 'kw-error', role: 'alert', hidden: true });
    const cancel = h('button', { type: 'button', class: 'kw-button', 'data-kw': 'cancel', autofocus: true, text: 'Cancel', onclick: () => dialog.close() });
    const confirm = h('button', {
      type: 'button',
      class: 'kw-button kw-danger-solid',
      'data-kw': 'confirm-revoke',
      text: `Revoke “${name}”`,
      onclick: async () => {
        confirm.disabled = true;
        try {
          await this._call('revoke', { id: this._field(key, 'id') });
        } catch (failure) {
          confirm.disabled = false;
          error.replaceChildren(h('p', { text: failure.message }));
          error.hidden = false;
          return;
        }
        this._revoked = true;
        dialog.close();
        this._say(`Key “${name}” revoked. Requests with it are refused from now on.`);
        await this.refresh();
        this._heading.focus();
      },
    });
    const dialog = h('dialog', { class: 'kw-dialog', role: 'alertdialog', 'aria-labelledby': `${id}-revoke-title`, 'aria-describedby': `${id}-revoke-text`, 'data-kw': 'revoke-dialog' },
      h('h2', { class: 'kw-title', id: `${id}-revoke-title`, text: `Revoke “${name}”?` }),
      h('p', { id: `${id}-revoke-text` },
        `Anything using this key${start ? ` (${start}…)` : ''} stops working at once. This cannot be undone.`),
      error,
      h('div', { class: 'kw-actions' }, cancel, confirm));
    this._revoked = false;
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (!this._revoked && opener.isConnected) opener.focus();
    });
    this.append(dialog);
    dialog.showModal();
    cancel.focus();
  }

  /** Rotation: a successor with the same name and scopes; the old key
   * stops at once or after a grace period the user picks. */
  _confirmRotate(key, opener) {
    const config = this._config;
    const id = this._id;
    const name = this._field(key, 'name') ?? '';
    const error = h('div', { class: 'kw-error', role: 'alert', hidden: true });
    const graces = [[0, 'Stop working at once'], [3600, 'Keep working for 1 hour'],
      [86400, 'Keep working for 24 hours'], [604800, 'Keep working for 7 days']]
      .filter(([seconds]) => seconds <= config.max_rotation_grace_seconds);
    const radios = graces.map(([seconds, text], i) => h('label', { class: 'kw-choice kw-preset' },
      h('input', { type: 'radio', name: `${id}-grace`, value: seconds, checked: i === 0, 'data-kw': `grace-${seconds}` }),
      ` ${text}`));
    const cancel = h('button', { type: 'button', class: 'kw-button', 'data-kw': 'cancel', text: 'Cancel', onclick: () => dialog.close() });
    let rotated = false;
    const confirm = h('button', {
      type: 'button',
      class: 'kw-button kw-primary',
      'data-kw': 'confirm-rotate',
      text: 'Rotate key',
      onclick: async () => {
        const grace = Number(radios.map((label) => label.querySelector('input')).find((input) => input.checked)?.value ?? 0);
        confirm.disabled = true;
        let created;
        try {
          created = await this._call('rotate', { id: this._field(key, 'id'), body: grace > 0 ? { grace_period_seconds: grace } : {} });
        } catch (failure) {
          confirm.disabled = false;
          error.replaceChildren(h('p', { text: failure.detail ? `${failure.message} (${failure.detail})` : failure.message }));
          error.hidden = false;
          return;
        }
        const secret = created?.[config.fields.secret];
        if (created) delete created[config.fields.secret];
        rotated = true;
        this._secretOpen = true;
        dialog.close();
        const old = grace > 0 ? `The old key works until ${new Date(Date.now() + grace * 1000).toLocaleString()}.` : 'The old key is revoked.';
        this._showSecret(name, secret, `Key “${name}” rotated. ${old} The new secret is no longer shown.`);
      },
    });
    const dialog = h('dialog', { class: 'kw-dialog', 'aria-labelledby': `${id}-rotate-title`, 'data-kw': 'rotate-dialog' },
      h('h2', { class: 'kw-title', id: `${id}-rotate-title`, text: `Rotate “${name}”?` }),
      h('p', { text: 'A new key replaces this one, with the same name and scopes. Its secret is shown once.' }),
      error,
      h('fieldset', { class: 'kw-fieldset' }, h('legend', { text: 'The old key' }), radios),
      h('div', { class: 'kw-actions' }, cancel, confirm));
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (!rotated && opener.isConnected) opener.focus();
    });
    this.append(dialog);
    dialog.showModal();
    radios[0]?.querySelector('input')?.focus();
  }

  async _toggle(key, toggle, on, button) {
    const name = this._field(key, 'name') ?? '';
    button.disabled = true;
    try {
      const changed = await this._call('update', { id: this._field(key, 'id'), body: { [toggle.field]: on } });
      if (changed) Object.assign(key, changed);
      else key[toggle.field] = on;
      this._error.hidden = true;
      this._say(`${toggle.label}: ${on ? 'on' : 'off'} for “${name}”.`);
    } catch (failure) {
      this._showError(failure);
    }
    const id = this._field(key, 'id');
    this._renderList();
    this._list.querySelector(`tr[data-key-id="${CSS.escape(id ?? '')}"] [data-kw="toggle-${toggle.field}"]`)?.focus();
  }
}

customElements.define('keyward-api-keys', KeywardApiKeys);
