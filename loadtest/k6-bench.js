// One benchmark run, driven by loadtest/bench.py: POST a fixed body to TARGET at a fixed arrival
// rate (RATE per second) or with a fixed number of VUs (VUS), for DURATION; write the summary to
// SUMMARY. For streams, http_req_waiting is the time to the first byte. UNIQUE=1 makes every
// request's last message different (cache-miss runs). KEYS (comma-separated) spreads the requests
// over many client keys, one per VU and iteration in turn.
import http from 'k6/http';

const TARGET = __ENV.TARGET;
const BODY = open(__ENV.BODY_FILE);
const KEYS = (__ENV.KEYS || __ENV.KEY || 'none').split(',');
const HEADERS = KEYS.map((key) => ({ 'Content-Type': 'application/json', Authorization: `Bearer ${key}` }));
const DURATION = __ENV.DURATION || '10s';

const scenario = __ENV.RATE
  ? { executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s',
      duration: DURATION, preAllocatedVUs: Number(__ENV.PREALLOC || 50), maxVUs: 400 }
  : { executor: 'constant-vus', vus: Number(__ENV.VUS || 50), duration: DURATION };

export const options = {
  scenarios: { bench: scenario },
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
  discardResponseBodies: true,
  noConnectionReuse: false,
};

const UNIQUE = __ENV.UNIQUE === '1';
const PARSED = UNIQUE ? JSON.parse(BODY) : null;

export default function () {
  let body = BODY;
  if (UNIQUE) {
    const messages = PARSED.messages.slice(0, -1);
    const last = PARSED.messages[PARSED.messages.length - 1];
    messages.push({ role: last.role, content: `${last.content} #${__VU}-${__ITER}-${Date.now()}` });
    body = JSON.stringify({ ...PARSED, messages });
  }
  http.post(TARGET, body, { headers: HEADERS[(__VU + __ITER) % HEADERS.length] });
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
