// Package redisengine implements wshub.Engine on Redis.
package redisengine
