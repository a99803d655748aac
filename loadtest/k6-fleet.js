// Steady load on a fleet (tests/integration/test_fleet.py): a constant arrival rate of chat
// completions through the load balancer, counting what the clients were told they spent.
//
//   k6 run loadtest/k6-fleet.js -e GATEWAY_URL=http://127.0.0.1:8080 -e GATEWAY_KEY=... \
//     -e RATE=40 -e DURATION=30s -e SUMMARY=summary.json
//
// The summary's counters: `served` (200s), `failed` (anything else, each also logged as
// `FAILED <status> <error>` on stderr), `cost_micros` (the sum of the x-gateway-cost-usd
// headers, in integer micro-dollars).
import http from 'k6/http';
import { Counter } from 'k6/metrics';

const BASE = __ENV.GATEWAY_URL || 'http://127.0.0.1:8080';
const KEY = __ENV.GATEWAY_KEY || '';
const served = new Counter('served');
const failed = new Counter('failed');
const costMicros = new Counter('cost_micros');

export const options = {
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 40),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: 20,
      maxVUs: 100,
    },
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  const payload = JSON.stringify({
    model: 'gpt-4.1',
    messages: [{ role: 'user', content: `fleet ${__VU}-${__ITER}` }],
    max_tokens: 50,
  });
  const response = http.post(`${BASE}/v1/chat/completions`, payload, {
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
    timeout: '60s',
  });
  if (response.status === 200) {
    served.add(1);
    // Exact: a micro-dollar amount times 1e6, rounded, is an integer well inside 2^53.
    costMicros.add(Math.round(parseFloat(response.headers['X-Gateway-Cost-Usd']) * 1e6));
  } else {
    failed.add(1);
    console.error(`FAILED ${response.status} ${response.error} ${String(response.body).slice(0, 200)}`);
  }
}

export function handleSummary(data) {
  const count = (name) => (data.metrics[name] ? data.metrics[name].values.count : 0);
  const out = {
    served: count('served'),
    failed: count('failed'),
    cost_micros: count('cost_micros'),
    requests: count('http_reqs'),
    p99_ms: data.metrics.http_req_duration.values['p(99)'],
  };
  const result = { stdout: JSON.stringify(out) + '\n' };
  if (__ENV.SUMMARY) result[__ENV.SUMMARY] = JSON.stringify(out);
  return result;
}
