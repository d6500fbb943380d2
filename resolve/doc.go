// Package resolve holds the conflict resolvers of duplex.
package resolve
