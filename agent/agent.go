// Package agent is the deploy agent's lifecycle, as ironic-python-agent
// runs it: wait for network interfaces, look the node up in Ironic (or
// Ingot's conductor), serve the command API, and heartbeat until the
// machine is powered off. It never gives up on a recoverable error: a
// failed lookup, a refused token or a port in use are logged and retried,
// because on a real machine there is nobody to restart the agent.
package agent
