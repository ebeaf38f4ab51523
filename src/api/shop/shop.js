// The shopper page: one sale, its countdown on the server's clock, the buttons of its mode
// (buy, join the queue, register for the draw), proof-of-work in a Web Worker, the ticket's
// live place, then the order with pay and cancel. Only this server's API is called.
//
// Demo credentials come from the URL fragment, which the browser never sends to the server:
// #token=<shopper token> (in production the shop's own login hands the page its token), and
// optionally &pay=<payment-service token> to pay from the page (in production the payment
// provider confirms payment, never the shopper's page).
const sku = decodeURIComponent(location.pathname.split('/')[2] || '');
const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get('token');
const payToken = fragment.get('pay');
const $ = (id) => document.getElementById(id);

let offset = 0; // server clock minus this browser's, measured, never assumed
let sale = null;
let order = null;
let pass = null;
let busy = false;

const now = () => Date.now() + offset;

function say(text) {
  $('status').textContent = text;
}

async function api(method, path, { body, headers = {}, auth = token } = {}) {
  const h = { ...headers };
  if (auth) h.Authorization = `Bearer ${auth}`;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  let data = null;
  try { data = await response.json(); } catch { /* no body */ }
  return { status: response.status, data };
}

// The offset from the round trip with the least delay of a few: the server's time is taken to
// be read halfway through it.
async function syncClock() {
  let best = null;
  for (let i = 0; i < 3; i++) {
    const sent = Date.now();
    const { data } = await api('GET', '/v1/time', { auth: null });
    const received = Date.now();
    const rtt = received - sent;
    if (data && typeof data.now_ms === 'number' && (!best || rtt < best.rtt)) {
      best = { rtt, offset: data.now_ms - (sent + rtt / 2) };
    }
  }
  if (best) offset = best.offset;
}

function money(minor, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(minor / 100);
  } catch {
    return `${minor} ${currency}`;
  }
}

function duration(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

async function loadSale() {
  const { status, data } = await api('GET', `/v1/sales/${encodeURIComponent(sku)}`, { auth: null });
  if (status !== 200) {
    $('name').textContent = 'No such sale';
    return false;
  }
  sale = data;
  document.title = `${sale.name} · seckill`;
  $('name').textContent = sale.name;
  $('price').textContent = sale.price > 0 ? money(sale.price, sale.currency) : '';
  $('stock').textContent = `${sale.remaining} of ${sale.stock} left`;
  return true;
}

// The moment the mode's first button opens: joining and registering open before the start.
function opensAt() {
  if (sale.admission === 'waiting_room') return sale.queue_opens_at;
  if (sale.admission === 'lottery') return sale.register_from;
  return sale.starts_at;
}

function tick() {
  if (!sale) return;
  const t = now();
  if (t < sale.starts_at) {
    $('countdown').textContent = `Starts in ${duration(sale.starts_at - t)}`;
  } else if (t < sale.ends_at) {
    $('countdown').textContent = 'On sale now';
  } else {
    $('countdown').textContent = 'This sale has ended';
  }
  const open = t >= opensAt() && t < sale.ends_at && !busy;
  if (sale.admission === 'fcfs') $('buy').disabled = !open || t < sale.starts_at || order !== null;
  if (sale.admission === 'waiting_room') $('join').disabled = !open || t >= sale.ends_at;
  if (sale.admission === 'lottery') $('register').disabled = !open || t >= sale.starts_at;
}

// Solves the sale's challenge in a Web Worker; the header to send, or none when no work is asked.
async function proofOfWork() {
  if (!sale.pow_bits) return {};
  const { status, data } = await api('GET', `/v1/sales/${encodeURIComponent(sku)}/pow`);
  if (status !== 200) throw new Error(data?.message || 'no challenge');
  if (data.bits === 0) return {};
  say(`Proving you are not a bot (${data.bits} bits of work)…`);
  const solved = await new Promise((resolve, reject) => {
    const worker = new Worker('/shop/assets/pow-worker.js');
    worker.onmessage = (event) => {
      if (event.data.nonce !== undefined) {
        worker.terminate();
        resolve(event.data);
      }
    };
    worker.onerror = (error) => reject(error);
    worker.postMessage({ challenge: data.challenge, bits: data.bits });
  });
  document.body.dataset.powMs = String(Math.round(solved.ms));
  document.body.dataset.powHashes = String(solved.hashes);
  return { 'X-Seckill-Pow': `${data.window}.${solved.nonce}` };
}

function showOrder(placed) {
  order = placed;
  $('order').hidden = false;
  $('order-id').textContent = order.order_id;
  $('order-status').textContent = order.status;
  $('order-amount').textContent = money(order.amount, sale.currency);
  $('order-deadline').textContent = new Date(order.expires_at - offset).toLocaleTimeString();
  const pending = order.status === 'pending';
  $('pay').hidden = !pending || !payToken;
  $('cancel').hidden = !pending;
  $('buy').hidden = true;
}

async function buy() {
  busy = true;
  $('buy').disabled = true;
  try {
    const headers = sale.admission === 'fcfs' ? await proofOfWork() : { 'X-Seckill-Pass': pass };
    say('Buying…');
    const { status, data } = await api('POST', `/v1/sales/${encodeURIComponent(sku)}/purchase`, {
      body: { quantity: 1 },
      headers,
    });
    if (status === 201) {
      say('Bought! Pay before the deadline to keep it.');
      showOrder(data);
    } else {
      say(data?.message || `Could not buy (${status}).`);
    }
  } catch (error) {
    say(`Could not buy: ${error.message}`);
  } finally {
    busy = false;
    tick();
  }
}

// Joins the queue or registers for the draw, then follows the ticket until it can buy.
async function enter(kind) {
  busy = true;
  $(kind === 'queue' ? 'join' : 'register').disabled = true;
  try {
    const headers = await proofOfWork();
    const { status, data } = await api('POST', `/v1/sales/${encodeURIComponent(sku)}/${kind}`, { headers });
    if (status !== 200 && status !== 201) {
      say(data?.message || `Could not ${kind === 'queue' ? 'join' : 'register'} (${status}).`);
      return;
    }
    $(kind === 'queue' ? 'join' : 'register').hidden = true;
    follow(kind, data.ticket);
  } catch (error) {
    say(`Could not join: ${error.message}`);
  } finally {
    busy = false;
  }
}

async function follow(kind, number) {
  const path = kind === 'queue'
    ? `/v1/sales/${encodeURIComponent(sku)}/queue/${number}`
    : `/v1/sales/${encodeURIComponent(sku)}/register`;
  const { status, data } = await api('GET', path);
  if (status !== 200) {
    say(data?.message || `Could not read the ticket (${status}).`);
    setTimeout(() => follow(kind, number), 2000);
    return;
  }
  document.body.dataset.ticketState = data.state;
  switch (data.state) {
    case 'waiting':
      say(data.position === null
        ? `In the queue: places are drawn at the start, in ${duration(data.estimated_wait_ms)}.`
        : `Place ${data.position} in the queue, ${data.ahead} ahead, about ${duration(data.estimated_wait_ms)} to go.`);
      break;
    case 'registered':
      say(`Registered: the draw is in ${duration(data.estimated_wait_ms)}.`);
      break;
    case 'admitted':
    case 'won':
      pass = data.pass;
      say(data.state === 'won' ? 'You won the draw: buy now.' : 'It is your turn: buy now.');
      $('buy').hidden = false;
      $('buy').disabled = false;
      $('buy').focus();
      return;
    case 'lost':
      say('Not drawn this time.');
      return;
    case 'sold_out':
      say('Sold out.');
      return;
    default:
      say('Your turn has passed.');
      return;
  }
  setTimeout(() => follow(kind, number), 1000);
}

async function pay() {
  $('pay').disabled = true;
  const { status, data } = await api('POST', `/v1/orders/${encodeURIComponent(order.order_id)}/pay`, {
    auth: payToken,
    body: { amount: order.amount, payment_ref: `page-${order.order_id}` },
  });
  $('pay').disabled = false;
  if (status === 200) {
    say('Paid. Thank you!');
    showOrder(data);
  } else {
    say(data?.message || `Could not pay (${status}).`);
  }
}

async function cancel() {
  const { status, data } = await api('POST', `/v1/orders/${encodeURIComponent(order.order_id)}/cancel`);
  if (status === 200) {
    say('Cancelled.');
    showOrder(data);
  } else {
    say(data?.message || `Could not cancel (${status}).`);
  }
}

async function main() {
  if (!token) {
    say('Sign in through the shop to buy (a demo link carries #token=…).');
  }
  await syncClock();
  document.body.dataset.clockOffset = String(Math.round(offset));
  if (!(await loadSale())) return;
  const button = { fcfs: 'buy', waiting_room: 'join', lottery: 'register' }[sale.admission];
  if (token) $(button).hidden = false;
  $('buy').addEventListener('click', buy);
  $('join').addEventListener('click', () => enter('queue'));
  $('register').addEventListener('click', () => enter('register'));
  $('pay').addEventListener('click', pay);
  $('cancel').addEventListener('click', cancel);
  tick();
  setInterval(tick, 250);
  setInterval(async () => {
    const { status, data } = await api('GET', `/v1/sales/${encodeURIComponent(sku)}`, { auth: null });
    if (status === 200) $('stock').textContent = `${data.remaining} of ${data.stock} left`;
  }, 5000);
}

main();
