module github.com/wshub/wshub/natsbroker

go 1.26
