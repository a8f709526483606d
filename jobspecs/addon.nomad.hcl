[#- An add-on: one Postgres or Redis server (billowin/addons/), its data on a Docker volume.
    Rendered with [[ ]] / [% %] delimiters and strict undefined variables, as app.nomad.hcl. -#]
job "[[ job_id ]]" {
  type        = "service"
  datacenters = ["*"]

  meta = {
    "billowin.addon"  = "[[ name ]]"
    "billowin.kind"   = "[[ kind ]]"
    # Whose config-store entry the job's tasks may read: the add-on's own credentials.
    "billowin.config" = "[[ job_id ]]"
  }

  group "[[ kind ]]" {
    count = 1
[%- if node %]

    # The volume is on this node: the add-on runs nowhere else.
    constraint {
      attribute = "${node.unique.id}"
      value     = "[[ node ]]"
    }
[%- endif %]

    network {
      # A fixed port, on the node's address on the apps' Docker network: the attached apps'
      # URLs never change, and nothing outside this box's apps reaches it (never the router).
      port "db" {
        static       = [[ port ]]
        to           = [[ container_port ]]
        host_network = "[[ host_network ]]"
      }
    }

    service {
      name         = "[[ job_id ]]"
      port         = "db"
      address_mode = "host"
      tags = [
        "billowin.addon",
        "billowin.addon=[[ name ]]",
        "billowin.kind=[[ kind ]]",
      ]

      check {
        name     = "[[ kind ]] [[ name ]] takes connections"
        type     = "tcp"
        interval = "5s"
        timeout  = "2s"
      }
    }

    # A server that dies is started again in place, as often as it takes: its data is here.
    restart {
      attempts = 5
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    # One data directory, so never two servers on it: a new version stops the old one first.
    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "3s"
      healthy_deadline  = "[[ healthy_deadline ]]"
      progress_deadline = "[[ progress_deadline ]]"
      auto_revert       = true
    }

    task "[[ kind ]]" {
      driver       = "docker"
      user         = "[[ user ]]"
      kill_signal  = "[[ kill_signal ]]"
      kill_timeout = "30s"

      logs {
        disabled = true
      }

      # How the server starts (first start: a new data directory and its credentials), in a
      # file: Nomad interpolates ${...} in the driver config, and the script needs its own.
      template {
        destination     = "local/start.sh"
        perms           = "0755"
        left_delimiter  = "[[ delimiter ]]{{"
        right_delimiter = "}}[[ delimiter ]]"
        data            = [[ script | hcl ]]
      }

      config {
        image        = "[[ image ]]"
        network_mode = "[[ network_mode ]]"
        ports        = ["db"]
        args         = ["sh", "/local/start.sh"]
        mount {
          type     = "volume"
          source   = "[[ volume ]]"
          target   = "[[ data ]]"
          readonly = false
        }
        labels = [{
          "billowin.addon" = "[[ name ]]"
          "billowin.kind"  = "[[ kind ]]"
        }]
        logging {
          type = "local"
          config {
            max-size = "[[ log_max_size ]]"
            max-file = "[[ log_max_files ]]"
          }
        }
      }

      env {
        BILLOWIN_ADDON = "[[ name ]]"
        ADDON_VERSION  = "[[ version ]]"
        ADDON_DATABASE = "[[ database ]]"
        ADDON_DATA     = "[[ data ]]"
        PGHOST         = "/tmp"
      }

[% include "config.hcl.partial" %]

      resources {
        cpu    = [[ cpu ]]
        memory = [[ memory ]]
      }
    }
  }
}
