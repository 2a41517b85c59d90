module github.com/wshub/wshub/bench

go 1.26
