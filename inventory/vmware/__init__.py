"""The vSphere connector (vCenter or a standalone ESXi host) through pyvmomi: pinned-certificate
sessions, PropertyCollector inventory, CBT snapshots, the NBD/NBDSSL, HotAdd and SAN transports,
restores and the snapshot hunter."""
