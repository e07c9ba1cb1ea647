package main

import (
	"fmt"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	vimxml "github.com/vmware/govmomi/vim25/xml"
)

// Raw device mappings. The simulator stores any disk backing but its disk-layout code (run by
// CreateVM, ReconfigVM, RefreshStorageInfo, snapshot removal, ...) type-asserts every disk to a
// flat backing and panics on an RDM. So around those calls each RDM backing is swapped for a
// flat "shadow" (same file, marked in its uuid) and swapped back afterwards; RDMs arriving in a
// request's device specs go in as shadows and come out as the RDM the client sent. Other SOAP
// calls wait while a swap is in progress, so clients never see a shadow.

const shadowPrefix = "vcsim-rdm-shadow-"

var layoutMethods = map[string]bool{
	"CreateVM_Task": true, "ReconfigVM_Task": true, "RefreshStorageInfo": true, "CloneVM_Task": true,
	"RelocateVM_Task": true, "RemoveSnapshot_Task": true, "RemoveAllSnapshots_Task": true, "Destroy_Task": true,
}

// Long polls must not hold the read lock: a swap would wait for them.
var longPolls = map[string]bool{"WaitForUpdates": true, "WaitForUpdatesEx": true}

type rdmShield struct {
	mu      sync.RWMutex
	backing sync.Mutex
	seq     int
	rdms    map[string]*types.VirtualDiskRawDiskMappingVer1BackingInfo // by shadow uuid
}

func newRDMShield() *rdmShield {
	return &rdmShield{rdms: make(map[string]*types.VirtualDiskRawDiskMappingVer1BackingInfo)}
}

func (s *rdmShield) shadow(rdm *types.VirtualDiskRawDiskMappingVer1BackingInfo) *types.VirtualDiskFlatVer2BackingInfo {
	s.backing.Lock()
	defer s.backing.Unlock()
	s.seq++
	id := fmt.Sprintf("%s%d", shadowPrefix, s.seq)
	s.rdms[id] = rdm
	return &types.VirtualDiskFlatVer2BackingInfo{
		VirtualDeviceFileBackingInfo: rdm.VirtualDeviceFileBackingInfo,
		DiskMode:                     string(types.VirtualDiskModePersistent),
		ThinProvisioned:              types.NewBool(false),
		Uuid:                         id,
	}
}

// unshadow gives the RDM a shadow stands for, carrying the file name the simulator chose.
func (s *rdmShield) unshadow(b types.BaseVirtualDeviceBackingInfo) *types.VirtualDiskRawDiskMappingVer1BackingInfo {
	flat, ok := b.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok || !strings.HasPrefix(flat.Uuid, shadowPrefix) {
		return nil
	}
	s.backing.Lock()
	rdm := s.rdms[flat.Uuid]
	s.backing.Unlock()
	if rdm != nil {
		rdm.VirtualDeviceFileBackingInfo = flat.VirtualDeviceFileBackingInfo
	}
	return rdm
}

// rewriteRequest turns RDM backings in the device specs of CreateVM/ReconfigVM into shadows and
// re-encodes the request; unchanged requests keep their body.
func (s *rdmShield) rewriteRequest(method *simulator.Method, body []byte) []byte {
	var changes []types.BaseVirtualDeviceConfigSpec
	var envelope interface{}
	switch req := method.Body.(type) {
	case *types.ReconfigVM_Task:
		changes, envelope = req.Spec.DeviceChange, &methods.ReconfigVM_TaskBody{Req: req}
	case *types.CreateVM_Task:
		changes, envelope = req.Config.DeviceChange, &methods.CreateVM_TaskBody{Req: req}
	default:
		return body
	}
	rewritten := false
	for _, change := range changes {
		device := change.GetVirtualDeviceConfigSpec().Device
		if disk, ok := device.(*types.VirtualDisk); ok {
			if rdm, isRDM := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo); isRDM {
				disk.Backing = s.shadow(rdm)
				rewritten = true
			}
		}
	}
	if !rewritten {
		return body
	}
	out, err := vimxml.Marshal(soap.Envelope{Body: envelope})
	if err != nil {
		return body
	}
	return out
}

type swappedDisk struct {
	disk *types.VirtualDisk
	vm   *simulator.VirtualMachine
}

// hide swaps every VM's RDM backings for shadows.
func (s *rdmShield) hide() []swappedDisk {
	var swapped []swappedDisk
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm, func() {
			for _, dev := range vm.Config.Hardware.Device {
				if disk, ok := dev.(*types.VirtualDisk); ok {
					if rdm, isRDM := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo); isRDM {
						disk.Backing = s.shadow(rdm)
						swapped = append(swapped, swappedDisk{disk, vm})
					}
				}
			}
		})
	}
	return swapped
}

// reveal puts the RDMs back: the swapped devices (still in their VM or not: snapshots share
// them) and any shadow a request brought in.
func (s *rdmShield) reveal(swapped []swappedDisk) {
	for _, d := range swapped {
		simulator.Map.WithLock(d.vm, func() {
			if rdm := s.unshadow(d.disk.Backing); rdm != nil {
				d.disk.Backing = rdm
			}
		})
	}
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm, func() {
			for _, dev := range vm.Config.Hardware.Device {
				if disk, ok := dev.(*types.VirtualDisk); ok {
					if rdm := s.unshadow(disk.Backing); rdm != nil {
						disk.Backing = rdm
					}
				}
			}
		})
	}
}
