package api

import (
	"context"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/sendense/sendense/hub/internal/inventory"
	"github.com/sendense/sendense/shared/api"
)

// inventoryService is what the API needs for discovery and VM queries.
type inventoryService interface {
	Apply(ctx context.Context, agentID, addr string, inv *api.Inventory) (api.InventoryResult, error)
	List(ctx context.Context, f inventory.Filter) (api.VMList, error)
	Show(ctx context.Context, idOrName string) (api.VMContext, error)
	RefreshDisks(ctx context.Context, agentID, addr, jobID, vmContextID string, disks []api.Disk) error
	Sources(ctx context.Context) ([]api.SourceInfo, error)
	MoveSource(ctx context.Context, source, agentID string) (api.SourceInfo, error)
}

func (s *Server) registerInventory(agent, v1 *gin.RouterGroup) {
	agent.PUT(rel(agent, api.PathAgentInventory), s.putInventory)
	v1.GET(rel(v1, api.PathVMs), s.requireRole(api.RoleViewer), s.listVMs)
	v1.GET(rel(v1, api.PathVM), s.requireRole(api.RoleViewer), s.showVM)
	v1.GET(rel(v1, api.PathVMDisks), s.requireRole(api.RoleViewer), s.showVMDisks)
	v1.GET(rel(v1, api.PathSources), s.requireRole(api.RoleViewer), s.listSources)
	// Giving a vCenter to another agent decides who may speak for it: an admin's call, like
	// revoking an agent.
	v1.POST(rel(v1, api.PathSourceMove), s.requireRole(api.RoleAdmin), s.moveSource)
}

func (s *Server) listSources(c *gin.Context) {
	srcs, err := s.deps.Inventory.Sources(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, api.SourceList{Sources: nonNil(srcs)})
}

func (s *Server) moveSource(c *gin.Context) {
	var req api.MoveSourceRequest
	if err := decodeJSON(c, smallBody, &req); err != nil {
		s.fail(c, err)
		return
	}
	if req.AgentID == "" {
		s.fail(c, &api.FieldError{Field: "agent_id", Msg: "required: the agent that reports on the source from now on"})
		return
	}
	src, err := s.deps.Inventory.MoveSource(c.Request.Context(), c.Param("id"), req.AgentID)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, src)
}

func (s *Server) putInventory(c *gin.Context) {
	var inv api.Inventory
	if err := decodeJSON(c, api.MaxInventoryBytes, &inv); err != nil {
		s.fail(c, err)
		return
	}
	res, err := s.deps.Inventory.Apply(c.Request.Context(), agentID(c), c.ClientIP(), &inv)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}

// pagination reads limit/offset query parameters (default 100, at most 1000).
func pagination(c *gin.Context) (int, int, error) {
	limit, offset := 100, 0
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return 0, 0, &api.FieldError{Field: "limit", Msg: "must be an integer between 1 and 1000"}
		}
		limit = n
	}
	if v := c.Query("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, &api.FieldError{Field: "offset", Msg: "must be a non-negative integer"}
		}
		offset = n
	}
	return limit, offset, nil
}

func (s *Server) listVMs(c *gin.Context) {
	limit, offset, err := pagination(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	status := c.Query("status")
	switch status {
	case "", api.VMDiscovered, api.VMProtected, api.VMGone:
	default:
		s.fail(c, &api.FieldError{Field: "status", Msg: "must be discovered, protected or gone"})
		return
	}
	switch c.Query("protected") {
	case "":
	case "false":
		s.unprotectedVMs(c, limit, offset)
		return
	default:
		s.fail(c, &api.FieldError{Field: "protected", Msg: "only protected=false (VMs no policy covers) is supported"})
		return
	}
	list, err := s.deps.Inventory.List(c.Request.Context(), inventory.Filter{Name: c.Query("name"), Status: status, AgentID: c.Query("agent"), Limit: limit, Offset: offset})
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, list)
}

func (s *Server) showVM(c *gin.Context) {
	vm, err := s.deps.Inventory.Show(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, vm)
}

func (s *Server) showVMDisks(c *gin.Context) {
	vm, err := s.deps.Inventory.Show(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, api.VMDiskList{VMContextID: vm.ContextID, Disks: nonNil(vm.Disks)})
}

// unprotectedVMs lists the VMs no enabled policy covers.
func (s *Server) unprotectedVMs(c *gin.Context, limit, offset int) {
	vms, err := s.deps.Policies.Unprotected(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	out := api.VMList{VMs: []api.VMContext{}, Page: api.Page{Limit: limit, Offset: offset, Total: len(vms)}}
	for i := offset; i < len(vms) && i < offset+limit; i++ {
		out.VMs = append(out.VMs, vms[i])
	}
	c.JSON(http.StatusOK, out)
}
