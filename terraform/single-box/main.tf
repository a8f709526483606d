# One cheap cloud VM running a Billowin production box: Hetzner Cloud, because its smallest
# type that fits (CX22: 2 vCPU, 4 GB, 40 GB disk, 20 TB traffic) costs a few euros a month
# (README "Terraform" compares it). cloud-init clones Billowin and runs `make setup` and
# `make install` (every value as an argument or environment variable, never through a shell).

module "firewall" {
  source = "../modules/web-firewall"
  name   = "${var.name}-web"
}

resource "hcloud_server" "box" {
  name         = var.name
  server_type  = var.server_type
  location     = var.location
  image        = var.image
  ssh_keys     = var.ssh_keys
  firewall_ids = [module.firewall.id]
  user_data = templatefile("${path.module}/../cloud-init.yaml.tftpl", {
    repository = jsonencode(var.billowin_repository)
    ref        = jsonencode(var.billowin_ref)
    install    = jsonencode(["make", "-C", "/opt/billowin", "install", "DOMAIN=${var.domain}", "INTERFACE=eth0"])
  })

  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }

  lifecycle {
    ignore_changes = [user_data] # cloud-init runs once: a new template does not replace the box
  }
}
