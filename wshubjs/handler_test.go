package wshubjs_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/wshub/wshub/wshubjs"
)

// TestHandler serves the files as the package documentation mounts them,
// and checks their content, types and caching.
func TestHandler(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("/wshub/", http.StripPrefix("/wshub/", wshubjs.Handler()))
	mux.Handle("GET /wshub.js", wshubjs.Handler()) // without StripPrefix
	srv := httptest.NewServer(mux)
	defer srv.Close()

	do := func(method, path string, header ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}

	etags := map[string]string{}
	for _, tc := range []struct{ path, file, ctype string }{
		{"/wshub/wshub.js", "wshub.js", "text/javascript; charset=utf-8"},
		{"/wshub.js", "wshub.js", "text/javascript; charset=utf-8"},
		{"/wshub/wshub.d.ts", "wshub.d.ts", "text/plain; charset=utf-8"},
	} {
		want, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := do("GET", tc.path)
		if resp.StatusCode != http.StatusOK || body != string(want) {
			t.Fatalf("GET %s: %s, %d bytes, want 200 and %s's %d bytes", tc.path, resp.Status, len(body), tc.file, len(want))
		}
		etag := resp.Header.Get("ETag")
		for k, v := range map[string]string{"Content-Type": tc.ctype, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"} {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("GET %s: %s %q, want %q", tc.path, k, got, v)
			}
		}
		if !strings.HasPrefix(etag, `"`) || len(etag) < 10 {
			t.Errorf("GET %s: ETag %q", tc.path, etag)
		}
		if old, ok := etags[tc.file]; ok && old != etag {
			t.Errorf("%s: two ETags, %s and %s", tc.file, old, etag)
		}
		etags[tc.file] = etag

		resp, body = do("GET", tc.path, "If-None-Match", etag)
		if resp.StatusCode != http.StatusNotModified || body != "" {
			t.Errorf("GET %s with its ETag: %s, want 304", tc.path, resp.Status)
		}
		resp, _ = do("GET", tc.path, "If-None-Match", `"other", `+etag)
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with a list of ETags: %s, want 304", tc.path, resp.Status)
		}
		resp, body = do("GET", tc.path, "If-None-Match", `"other"`)
		if resp.StatusCode != http.StatusOK || body != string(want) {
			t.Errorf("GET %s with another ETag: %s, want 200", tc.path, resp.Status)
		}
		resp, body = do("HEAD", tc.path)
		if resp.StatusCode != http.StatusOK || body != "" || resp.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("HEAD %s: %s %q", tc.path, resp.Status, resp.Header.Get("Content-Type"))
		}
	}
	if etags["wshub.js"] == etags["wshub.d.ts"] {
		t.Error("both files have one ETag")
	}

	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/wshub/", http.StatusNotFound},
		{"GET", "/wshub/other.js", http.StatusNotFound},
		{"GET", "/wshub/test/helpers.mjs", http.StatusNotFound},
		{"POST", "/wshub/wshub.js", http.StatusMethodNotAllowed},
	} {
		if resp, _ := do(tc.method, tc.path); resp.StatusCode != tc.status {
			t.Errorf("%s %s: %s, want %d", tc.method, tc.path, resp.Status, tc.status)
		}
	}
}
