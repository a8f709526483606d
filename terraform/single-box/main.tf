# One cheap cloud VM running a Billowin production box: Hetzner Cloud, because its smallest
# type that fits (CX22: 2 vCPU, 4 GB, 40 GB disk, 20 TB traffic) costs a few euros a month
# (README "Terraform" compares it). cloud-init clones Billowin and runs `make setup` and
# `make install` (every value as an argument or environment variable, never through a shell).

resource "hcloud_firewall" "box" {
  name = "${var.name}-web"

  dynamic "rule" {
    for_each = ["22", "80", "443"]
    content {
      direction  = "in"
      protocol   = "tcp"
      port       = rule.value
      source_ips = ["0.0.0.0/0", "::/0"]
    }
  }
}

resource "hcloud_server" "box" {
  name         = var.name
  server_type  = var.server_type
  location     = var.location
  image        = var.image
  ssh_keys     = var.ssh_keys
  firewall_ids = [hcloud_firewall.box.id]
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
