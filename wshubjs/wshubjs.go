// Package wshubjs serves wshub.js, a client of the wshub protocol for
// browsers and Node.js, with its TypeScript declarations, wshub.d.ts: an ES
// module without dependencies or build step. docs/CLIENTS.md is its
// reference, and says which Node.js versions it runs on.
//
// Mount Handler where pages can import it:
//
//	mux.Handle("/wshub/", http.StripPrefix("/wshub/", wshubjs.Handler()))
//
// and import it from a module script:
//
//	<script type="module">
//	import {Client} from "/wshub/wshub.js";
//	const hub = new Client("/ws");
//	hub.on("message", (m) => console.log(m.room, m.from, m.data));
//	await hub.join("lobby", {history: 50});
//	await hub.publish("lobby", {text: "hi"});
//	</script>
//
// The client reconnects on 1001, 1006, 1012 and the application's 4000s
// with exponential backoff and jitter (on 4001, with a new token, at
// once), joins its rooms again with a recovery, drops the messages it has
// delivered already, and reports whether each recovery was complete. With
// a token function it signs in with its first frame, refreshes before
// the sign-in expires, and stops as "signedout" on 4003. Its requests
// return promises, settled by the server's ack or error frame.
// The comment at the top of wshub.js documents it; wshub.d.ts types it.
package wshubjs

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"net/http"
	"strings"
	"time"
)

//go:embed wshub.js wshub.d.ts
var files embed.FS

// file is one of the files served, with its headers.
type file struct {
	body  []byte
	ctype string
	etag  string
}

var served = map[string]file{
	"wshub.js":   load("wshub.js", "text/javascript; charset=utf-8"),
	"wshub.d.ts": load("wshub.d.ts", "text/plain; charset=utf-8"),
}

func load(name, ctype string) file {
	body, err := files.ReadFile(name)
	if err != nil {
		panic(err) // embedded: cannot happen
	}
	sum := sha256.Sum256(body)
	return file{body: body, ctype: ctype, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`}
}

// Handler serves wshub.js and wshub.d.ts, found by the last element of
// the request's path (so it may be mounted with or without StripPrefix, at
// any path ending in those names); other names get 404, methods other than
// GET and HEAD 405. Responses carry an ETag, the hash of the content, and
// Cache-Control: no-cache, so browsers revalidate each time and get a 304
// until the file changes, as it does with a new version of this package.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	f, ok := served[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if name == "wshub.js" {
		h.Set("X-TypeScript-Types", "./wshub.d.ts") // for Deno
	}
	// ServeContent answers If-None-Match with 304, and ranges.
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
