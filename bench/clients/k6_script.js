// k6 peer for the client benchmark. LG_PATTERN=closed|seed, BASE_URL=http://127.0.0.1:PORT
import http from 'k6/http';
import { sleep } from 'k6';

const SEED = __ENV.LG_PATTERN === 'seed';
const BASE = __ENV.BASE_URL;

export default function () {
  if (SEED && __ITER === 0) sleep(Math.random() * 3);
  http.get(`${BASE}/api/v1/sessions/${__VU}`);
  if (SEED) sleep(Math.random() * 3);
}
