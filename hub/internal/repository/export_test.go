package repository

// RegistryOpensForTest reports how many times g has opened a repository from its store.
func RegistryOpensForTest(g *Registry) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.opens
}
