module github.com/wshub/wshub/redisengine

go 1.26.0

replace github.com/wshub/wshub => ../

require (
	github.com/coder/websocket v1.8.15
	github.com/redis/rueidis v1.0.80
	github.com/wshub/wshub v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.25.0
)

require golang.org/x/sys v0.50.0 // indirect
