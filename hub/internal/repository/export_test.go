package repository

// RegistryOpensForTest reports how many times g has opened a repository from its store.
func RegistryOpensForTest(g *Registry) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.opens
}

// RegistryWaitersForTest reports how many callers wait for the open of id in progress (0: none
// in progress).
func RegistryWaitersForTest(g *Registry, id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if call, ok := g.opening[id]; ok {
		return call.waiters
	}
	return 0
}
