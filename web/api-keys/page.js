// The served page's boot: framed by the product (an iframe), it asks the
// parent for a token over postMessage and accepts answers only from the
// origins the profile lists (`settings_page.frame_ancestors`); on its own
// (an operator), it shows a sign-in form. The token lives in this module's
// memory only: never in storage, never in the URL.
import './keyward-api-keys.js';

const element = document.getElementById('kw-keys');
const form = document.getElementById('kw-signin');

function standalone() {
  let token = null;
  let account = null;
  form.hidden = false;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    token = form.elements.token.value.trim();
    account = form.elements.account.value.trim() || null;
    // The form's copy goes; the module keeps the only one.
    form.reset();
    form.hidden = true;
    element.account = account;
    element.signOut = () => {
      token = null;
      element.hidden = true;
      form.hidden = false;
      form.elements.token.focus();
    };
    element.hidden = false;
    // Setting the provider starts the element.
    element.tokenProvider = async () => token;
  });
  form.elements.token.focus();
}

async function framed() {
  const config = await element.loadConfig();
  const allowed = new Set(config.frame_ancestors);
  let pending = [];
  window.addEventListener('message', (event) => {
    if (event.source !== window.parent || !allowed.has(event.origin)) return;
    const data = event.data;
    if (!data || data.type !== 'keyward:token' || typeof data.token !== 'string') return;
    const waiting = pending;
    pending = [];
    for (const resolve of waiting) resolve(data.token);
  });
  // Asked afresh before each call, so the product can hand over a renewed
  // token; the request itself carries nothing secret.
  element.tokenProvider = () => new Promise((resolve, reject) => {
    pending.push(resolve);
    window.parent.postMessage({ type: 'keyward:token-request' }, '*');
    setTimeout(() => reject(new Error('no token from the embedding page')), 10000);
  });
  element.hidden = false;
}

if (window.parent !== window) {
  framed();
} else {
  standalone();
}
