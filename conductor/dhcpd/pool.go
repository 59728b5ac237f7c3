package dhcpd

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Pool errors.
var (
	ErrPoolFull = errors.New("address pool exhausted")
	ErrNotOurs  = errors.New("address not in the pool")
	ErrTaken    = errors.New("address leased to another client")
)

// MaxPool is the largest address range a Pool manages (a /16).
const MaxPool = 1 << 16

// Lease is one address handed to one client.
type Lease struct {
	MAC     string
	IP      netip.Addr
	Expires time.Time
	// Offered leases are reserved for a short while between OFFER and
	// REQUEST; committed ones were acknowledged.
	Offered bool
}

// Pool is the small in-memory lease table of full mode: one range of
// IPv4 addresses. Clients keep their address across leases while it is
// free; after a conductor restart a client renewing an address that is
// free gets it back.
type Pool struct {
	mu        sync.Mutex
	first     netip.Addr
	last      netip.Addr
	leaseTime time.Duration
	offerTime time.Duration
	now       func() time.Time
	byMAC     map[string]*Lease
	byIP      map[netip.Addr]*Lease
	declined  map[netip.Addr]time.Time
}

// NewPool returns a pool of the addresses first..last (inclusive).
func NewPool(first, last netip.Addr, leaseTime time.Duration, now func() time.Time) (*Pool, error) {
	if !first.Is4() || !last.Is4() || last.Less(first) {
		return nil, fmt.Errorf("dhcp range %s-%s: want two IPv4 addresses, the first not above the last", first, last)
	}
	if f, l := first.As4(), last.As4(); uint32(l[0])<<24|uint32(l[1])<<16|uint32(l[2])<<8|uint32(l[3])-
		(uint32(f[0])<<24|uint32(f[1])<<16|uint32(f[2])<<8|uint32(f[3])) >= MaxPool {
		return nil, fmt.Errorf("dhcp range %s-%s: more than %d addresses", first, last, MaxPool)
	}
	if leaseTime <= 0 {
		return nil, fmt.Errorf("dhcp lease time %s: must be positive", leaseTime)
	}
	if now == nil {
		now = time.Now
	}
	return &Pool{first: first, last: last, leaseTime: leaseTime, offerTime: 30 * time.Second, now: now,
		byMAC: map[string]*Lease{}, byIP: map[netip.Addr]*Lease{}, declined: map[netip.Addr]time.Time{}}, nil
}

// Contains reports whether ip is in the pool's range.
func (p *Pool) Contains(ip netip.Addr) bool {
	return ip.Is4() && !ip.Less(p.first) && !p.last.Less(ip)
}

// LeaseTime is how long committed leases last.
func (p *Pool) LeaseTime() time.Duration { return p.leaseTime }

// free reports whether ip can go to mac now.
func (p *Pool) free(mac string, ip netip.Addr, now time.Time) bool {
	if !p.Contains(ip) {
		return false
	}
	if until, ok := p.declined[ip]; ok && now.Before(until) {
		return false
	}
	l := p.byIP[ip]
	return l == nil || l.MAC == mac || !now.Before(l.Expires)
}

func (p *Pool) assign(mac string, ip netip.Addr, until time.Time, offered bool) Lease {
	if old := p.byMAC[mac]; old != nil && old.IP != ip {
		delete(p.byIP, old.IP)
	}
	if old := p.byIP[ip]; old != nil && old.MAC != mac {
		delete(p.byMAC, old.MAC)
	}
	l := &Lease{MAC: mac, IP: ip, Expires: until, Offered: offered}
	p.byMAC[mac] = l
	p.byIP[ip] = l
	return *l
}

// Offer reserves an address for mac: its previous one if still free, else
// the one it asked for if free, else the lowest free address.
func (p *Pool) Offer(mac string, requested netip.Addr) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var candidates []netip.Addr
	if l := p.byMAC[mac]; l != nil {
		candidates = append(candidates, l.IP)
	}
	if requested.IsValid() {
		candidates = append(candidates, requested)
	}
	for _, ip := range candidates {
		if p.free(mac, ip, now) {
			return p.offer(mac, ip, now), nil
		}
	}
	for ip := p.first; ip.IsValid() && !p.last.Less(ip); ip = ip.Next() {
		if p.free(mac, ip, now) {
			return p.offer(mac, ip, now), nil
		}
	}
	return netip.Addr{}, ErrPoolFull
}

func (p *Pool) offer(mac string, ip netip.Addr, now time.Time) netip.Addr {
	until := now.Add(p.offerTime)
	if l := p.byMAC[mac]; l != nil && l.IP == ip && !l.Offered && l.Expires.After(until) {
		return ip // an active lease stays committed
	}
	return p.assign(mac, ip, until, true).IP
}

// Commit acknowledges ip for mac for a lease time: after an offer, on a
// renewal, or when a client that restarted asks for the address it had.
func (p *Pool) Commit(mac string, ip netip.Addr) (Lease, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.Contains(ip) {
		return Lease{}, fmt.Errorf("%w: %s", ErrNotOurs, ip)
	}
	now := p.now()
	if !p.free(mac, ip, now) {
		return Lease{}, fmt.Errorf("%w: %s", ErrTaken, ip)
	}
	return p.assign(mac, ip, now.Add(p.leaseTime), false), nil
}

// Release frees mac's lease on ip.
func (p *Pool) Release(mac string, ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byMAC[mac]; l != nil && l.IP == ip {
		// Keep the binding so the client gets the same address next
		// time, but let it expire now.
		l.Expires = p.now()
		l.Offered = false
	}
}

// Decline takes ip out of use for a lease time: a client found it in use
// on the network.
func (p *Pool) Decline(mac string, ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.Contains(ip) {
		return
	}
	p.declined[ip] = p.now().Add(p.leaseTime)
	if l := p.byIP[ip]; l != nil && l.MAC == mac {
		delete(p.byIP, ip)
		delete(p.byMAC, mac)
	}
}

// Leases lists the current bindings, by address.
func (p *Pool) Leases() []Lease {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Lease, 0, len(p.byIP))
	for _, l := range p.byIP {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}
