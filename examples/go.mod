module github.com/wshub/wshub/examples

go 1.26
