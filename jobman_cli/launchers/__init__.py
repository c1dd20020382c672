"""Launchers: the cloud side of jobman (the port in :mod:`.base`, EC2 in :mod:`.ec2`, and the
instance's user-data script in :mod:`.userdata`)."""
