// Node + `ws` peer for the WebSocket client benchmark: same workload as gen_ws.py.
// usage: node gen_ws.js URL CONNS RATE HOLD_S
'use strict';
const WebSocket = require('ws');
const { performance, monitorEventLoopDelay } = require('perf_hooks');

const [url, conns, rate, hold] = [process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5]];
const PERIOD = 5000;
const UPDATERS = 1000;
const st = { connected: 0, failed: 0, closed: 0, sent: 0, received: 0 };
let holding = false;
const rtts = [];

function open(idx) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  let n = 0;
  let timers = [];
  ws.on('open', () => {
    st.connected++;
    timers.push(setInterval(() => {
      ws.send(JSON.stringify({ type: 'heartbeat', timestamp: performance.now() }));
      st.sent++;
    }, PERIOD));
    if (idx < UPDATERS) {
      setTimeout(() => {
        timers.push(setInterval(() => {
          n++;
          ws.send(JSON.stringify({
            type: 'state_update', sessionId: `session-${idx}`,
            delta: { operations: [{ op: 'add', path: '/data/counter', value: n }] },
            timestamp: performance.now(),
          }));
          st.sent++;
        }, PERIOD));
      }, PERIOD / 2);
    }
  });
  ws.on('message', (data) => {
    st.received++;
    const m = JSON.parse(data);
    if (m.type === 'heartbeat_ack' && holding) rtts.push(performance.now() - m.timestamp);
  });
  ws.on('error', () => { if (ws.readyState !== WebSocket.OPEN) st.failed++; });
  ws.on('close', () => { st.closed++; timers.forEach(clearInterval); });
}

const lag = monitorEventLoopDelay({ resolution: 10 });
let i = 0;
const perTick = Math.max(1, Math.floor(rate / 100));
const ramp = setInterval(() => {
  for (let k = 0; k < perTick && i < conns; k++) open(i++);
  if (i >= conns) clearInterval(ramp);
}, 10);
const rampDeadline = Date.now() + (conns / rate) * 3000 + 30000;
const wait = setInterval(() => {
  if (st.connected + st.failed >= conns || Date.now() > rampDeadline) {
    clearInterval(wait);
    console.log(`READY ${st.connected} ${st.failed}`);
    holding = true;
    lag.enable();
    setTimeout(() => {
      holding = false;
      lag.disable();
      rtts.sort((a, b) => a - b);
      const pct = (p) => rtts.length ? +rtts[Math.min(rtts.length - 1, Math.floor(rtts.length * p))].toFixed(3) : null;
      console.log(JSON.stringify({
        ...st, rtt_samples: rtts.length, rtt_p50_ms: pct(0.5), rtt_p99_ms: pct(0.99),
        lag_p50_ms: +(lag.percentile(50) / 1e6 - 10).toFixed(3),
        lag_p99_ms: +(lag.percentile(99) / 1e6 - 10).toFixed(3),
      }));
      setTimeout(() => process.exit(0), 60000);
    }, hold * 1000);
  }
}, 50);
process.on('SIGTERM', () => process.exit(0));
