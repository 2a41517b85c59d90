module github.com/wshub/wshub

go 1.26.0

require (
	github.com/coder/websocket v1.8.15
	golang.org/x/sync v0.25.0
)

require go.uber.org/goleak v1.3.0
