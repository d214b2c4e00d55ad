// A Node service using OpenTelemetry JS's own W3C baggage propagator (tests/interop).
//
//   GET /read                  -> {"read": {key: value, ...}}  (what JS decoded)
//   GET /forward?to=<url>      -> the same, plus the JSON the service at <url> answered when
//                                 called with the baggage JS re-injected ("forwarded"), and
//                                 the header JS sent ("sent").
// Listens on 127.0.0.1, on the port given as argv[2] (0: any); prints {"port": N} when ready.
"use strict";

const http = require("http");
const { ROOT_CONTEXT, propagation, defaultTextMapGetter, defaultTextMapSetter } = require("@opentelemetry/api");
const { W3CBaggagePropagator } = require("@opentelemetry/core");

const propagator = new W3CBaggagePropagator();

function read(ctx) {
  const baggage = propagation.getBaggage(ctx);
  const out = {};
  if (baggage) {
    for (const [key, entry] of baggage.getAllEntries()) {
      out[key] = entry.value;
    }
  }
  return out;
}

function forward(ctx, url, done) {
  const headers = {};
  propagator.inject(ctx, headers, defaultTextMapSetter);
  http.get(url, { headers }, (res) => {
    let body = "";
    res.setEncoding("utf8");
    res.on("data", (chunk) => { body += chunk; });
    res.on("end", () => done(null, headers.baggage || null, res.statusCode, body));
  }).on("error", (err) => done(err));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  const ctx = propagator.extract(ROOT_CONTEXT, req.headers, defaultTextMapGetter);
  const answer = { read: read(ctx) };
  const reply = (status, body) => {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const to = url.searchParams.get("to");
  if (url.pathname !== "/forward" || !to) {
    reply(200, answer);
    return;
  }
  forward(ctx, to, (err, sent, status, body) => {
    if (err) {
      reply(502, { error: String(err) });
      return;
    }
    answer.sent = sent;
    answer.forwarded = status === 200 ? JSON.parse(body) : { status, body };
    reply(200, answer);
  });
});

server.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
