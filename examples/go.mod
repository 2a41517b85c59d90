module github.com/wshub/wshub/examples

go 1.26.0

// The examples always build against the wshub next to them, with or
// without the repository's go.work.
replace github.com/wshub/wshub => ../

require (
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	github.com/coder/websocket v1.8.15
	github.com/wshub/wshub v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
)

require (
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	golang.org/x/sync v0.25.0 // indirect
)
