// A MadBase Edge Function in JavaScript: a wasi:http/proxy component built by
// `jco componentize` (componentize-js, the StarlingMonkey engine), see scripts/build-functions.sh.
//
// Any request: 200 application/json {"message":"Hello from JavaScript","method":<method>,"path":<URL path>}.
addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const path = new URL(request.url).pathname;
  const body = JSON.stringify({ message: 'Hello from JavaScript', method: request.method, path });
  return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
}
