# N nodes on one private network: the first is the cluster's first server (it makes the
# secrets and runs the registry and the API), the next `servers - 1` join as servers and the
# rest as clients, each with `billowin install --join` (README "Clusters"). Every node runs a
# router, so the wildcard DNS record may list every node (the dns_records output).

locals {
  subnet     = "10.0.1.0/24"
  private_ip = [for i in range(var.nodes) : cidrhost(local.subnet, i + 2)]
  install = ["make", "-C", "/opt/billowin", "install", "DOMAIN=${var.domain}", "INTERFACE=eth0",
  "PRIVATE_INTERFACE=${var.private_interface}"]
}

resource "hcloud_network" "cluster" {
  name     = "${var.name}-private"
  ip_range = "10.0.0.0/16"
}

resource "hcloud_network_subnet" "nodes" {
  network_id   = hcloud_network.cluster.id
  type         = "cloud"
  network_zone = var.network_zone
  ip_range     = local.subnet
}

module "firewall" {
  source = "../modules/web-firewall"
  name   = "${var.name}-web"
}

resource "hcloud_server" "node" {
  count        = var.nodes
  name         = "${var.name}-${count.index + 1}"
  server_type  = var.server_type
  location     = var.location
  image        = var.image
  ssh_keys     = var.ssh_keys
  firewall_ids = [module.firewall.id]
  # The first node installs itself; the others only set up, and join once it is up (below).
  user_data = templatefile("${path.module}/../cloud-init.yaml.tftpl", {
    repository = jsonencode(var.billowin_repository)
    ref        = jsonencode(var.billowin_ref)
    install    = jsonencode(count.index == 0 ? local.install : ["true"])
  })

  network {
    network_id = hcloud_network.cluster.id
    ip         = local.private_ip[count.index]
  }

  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }

  lifecycle {
    ignore_changes = [user_data]
  }

  depends_on = [hcloud_network_subnet.nodes]
}

# Each other node joins: the first server writes the join secrets for it (server or client),
# they travel over SSH to the new node only, and `make install JOIN=…` runs there.
resource "terraform_data" "join" {
  count            = var.nodes - 1
  triggers_replace = [hcloud_server.node[0].id, hcloud_server.node[count.index + 1].id]

  connection {
    type        = "ssh"
    host        = hcloud_server.node[count.index + 1].ipv4_address
    user        = "root"
    private_key = var.ssh_private_key
  }

  provisioner "remote-exec" {
    inline = ["cloud-init status --wait >/dev/null"]
  }

  provisioner "local-exec" {
    # Addresses and names only (from the provider and validated variables), never user text.
    command = join(" && ", [
      "ssh -o StrictHostKeyChecking=accept-new root@${hcloud_server.node[0].ipv4_address} 'cloud-init status --wait >/dev/null && /opt/billowin/.venv/bin/billowin join-secrets /root/join-${count.index + 2}.json ${count.index + 1 < var.servers ? "--server" : "--client"}'",
      "scp -3 -o StrictHostKeyChecking=accept-new root@${hcloud_server.node[0].ipv4_address}:/root/join-${count.index + 2}.json root@${hcloud_server.node[count.index + 1].ipv4_address}:/root/join.json",
      "ssh root@${hcloud_server.node[0].ipv4_address} rm /root/join-${count.index + 2}.json",
    ])
  }

  provisioner "remote-exec" {
    inline = [
      "${join(" ", local.install)} JOIN=${local.private_ip[0]} JOIN_SECRETS=/root/join.json",
      "rm /root/join.json",
    ]
  }
}
