// The seed's k6 load test, fixed: the Authorization header is a template string, the target comes
// from the environment, and errors are counted by k6's own http_req_failed.
//
//   k6 run loadtest/k6-test.js -e GATEWAY_URL=http://127.0.0.1:3000 -e GATEWAY_KEY=... [-e PROFILE=ci]
//
// PROFILE=full is the seed's 4.5-minute ramp to 100 users; PROFILE=ci is a 30-second version.
import http from 'k6/http';
import { check, sleep } from 'k6';

const BASE = __ENV.GATEWAY_URL || 'http://127.0.0.1:3000';
const KEY = __ENV.GATEWAY_KEY || '';
const PROFILES = {
  full: [
    { duration: '30s', target: 20 },
    { duration: '1m', target: 50 },
    { duration: '30s', target: 100 },
    { duration: '1m', target: 100 },
    { duration: '30s', target: 0 },
  ],
  ci: [
    { duration: '5s', target: 20 },
    { duration: '10s', target: 50 },
    { duration: '10s', target: 50 },
    { duration: '5s', target: 0 },
  ],
};
const THINK = __ENV.PROFILE === 'ci' ? [0.05, 0.25] : [0.5, 2.5];

export const options = {
  stages: PROFILES[__ENV.PROFILE || 'full'],
  thresholds: {
    http_req_duration: ['p(95)<500', 'p(99)<1000'],
    http_req_failed: ['rate<0.01'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
};

const MODELS = ['deepseek-v3.2', 'gemini-2.5-flash'];

export default function () {
  const payload = JSON.stringify({
    model: MODELS[__ITER % MODELS.length],
    messages: [
      { role: 'system', content: 'Bạn là một trợ lý lập trình chuyên nghiệp.' },
      { role: 'user', content: 'Viết hàm sắp xếp nhanh (quicksort) bằng Python' },
    ],
    max_tokens: 1000,
    temperature: 0.7,
  });
  const response = http.post(`${BASE}/call`, payload, {
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
  });
  check(response, {
    'status is 200': (r) => r.status === 200,
    'has content': (r) => r.status === 200 && typeof r.json('content') === 'string',
    'latency < 500ms': (r) => r.timings.duration < 500,
  });
  sleep(THINK[0] + Math.random() * (THINK[1] - THINK[0]));
}

export function handleSummary(data) {
  const out = { stdout: textSummary(data) };
  if (__ENV.SUMMARY) out[__ENV.SUMMARY] = JSON.stringify(data);
  return out;
}

function textSummary(data) {
  const d = data.metrics.http_req_duration.values;
  const failed = data.metrics.http_req_failed.values.rate;
  const reqs = data.metrics.http_reqs.values;
  return `requests: ${reqs.count} (${reqs.rate.toFixed(1)}/s)  failed: ${(100 * failed).toFixed(2)}%  ` +
    `p50 ${d.med.toFixed(1)} ms  p95 ${d['p(95)'].toFixed(1)} ms  p99 ${d['p(99)'].toFixed(1)} ms\n`;
}
