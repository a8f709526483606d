[#- The Billowin app job: one task group per Procfile process type.
    Rendered by billowin/jobspec.py with [[ ]] / [% %] delimiters, so Nomad's own
    {{ }} passes through untouched, and with strict undefined variables. -#]
job "[[ app ]]" {
  type        = "service"
  datacenters = ["*"]

  meta = {
    "billowin.app"     = "[[ app ]]"
    "billowin.release" = "[[ release ]]"
  }
[% for proc in processes %]
[%- set proc_mounts = mounts.get(proc.name, []) %]
  group "[[ proc.name ]]" {
    count = [[ proc.count ]]
[%- if proc.name in pinned %]

    # Its volumes are on this node (volumes:add): the process runs nowhere else.
    constraint {
      attribute = "${node.unique.id}"
      value     = "[[ pinned[proc.name] ]]"
    }
[%- endif %]

    # Deregister from Consul first, then wait, then stop: the router drops the
    # instance before it goes away, so in-flight and new requests are not lost.
    shutdown_delay = "[[ shutdown_delay ]]"

    # On a cluster, the instances of a process go to as many nodes as there are: losing a node
    # loses only its share (on one box this changes nothing).
    spread {
      attribute = "${node.unique.id}"
    }
[%- if proc.web %]

    network {
[%- if proc.port %]
      # The image's own port (its EXPOSE): the container listens there, $PORT says so, and
      # Nomad maps the host's port (the router's and the check's target) to it.
      port "http" {
        to = [[ proc.port ]]
      }
[%- else %]
      port "http" {}
[%- endif %]
    }

    service {
      name = "[[ app ]]"
      port = "http"
      # The host's address and port (what Nomad maps to the container), never the
      # container's address on its Docker network: only the host can reach that.
      address_mode = "host"
      tags = [
        "billowin.web",
        "billowin.app=[[ app ]]",
        "billowin.release=[[ release ]]",
[%- for domain in domains %]
        "billowin.domain=[[ domain ]]",
[%- endfor %]
      ]

      check {
        name     = "[[ app ]] web answers on $PORT"
        type     = "http"
        path     = "[[ proc.health_path ]]"
        interval = "[[ proc.health_interval ]]s"
        timeout  = "[[ proc.health_timeout ]]s"
[%- if proc.health_restart_after %]

        # app.json healthchecks "attempts" (Dokku: failed tries before a container counts as
        # failed): that many failed checks in a row restart the instance (the restart policy
        # below), counted after "initialDelay". Not Consul's failures_before_critical: that
        # would keep routing requests to a failing instance until the count is reached.
        check_restart {
          limit = [[ proc.health_restart_after ]]
          grace = "[[ proc.health_grace ]]s"
        }
[%- endif %]
      }
    }
[%- endif %]

    # A dying instance is restarted in place a few times, then rescheduled.
    restart {
      attempts = 3
      interval = "1m"
      delay    = "1s"
      mode     = "fail"
    }

    reschedule {
      delay          = "5s"
      delay_function = "exponential"
      max_delay      = "1m"
      unlimited      = true
    }

    update {
[%- if proc.web and proc.count > 0 and not proc_mounts %]
      # Blue/green: a full set of new instances must be healthy before any old
      # one is stopped; a release that never gets healthy is rolled back.
      canary       = [[ proc.count ]]
      auto_promote = true
[%- endif %]
[%- if proc_mounts %]
      # A process with a volume is stop-first: the old instances stop before the new ones
      # start, so two releases never write the same files (a short gap in service).
[%- endif %]
      max_parallel      = [[ [proc.count, 1] | max ]]
      health_check      = "[[ 'checks' if proc.web else 'task_states' ]]"
      min_healthy_time  = "[[ min_healthy_time ]]"
      healthy_deadline  = "[[ healthy_deadline ]]"
      progress_deadline = "[[ progress_deadline ]]"
      auto_revert       = true
    }

    task "[[ proc.name ]]" {
      driver       = "docker"
      kill_timeout = "[[ kill_timeout ]]"

      logs {
        disabled = true
      }

      config {
        image = "[[ image ]]"
        # A user-defined Docker network with inter-container traffic off: an app cannot
        # reach another app's (or a build's) container directly, only through the router.
        network_mode = "[[ network_mode ]]"
[%- if proc.web %]
        ports = ["http"]
[%- endif %]
[%- if proc.command %]
        args  = [[ proc.command | hcl ]]
[%- endif %]
[%- for mount in proc_mounts %]
        mount {
          type     = "volume"
          source   = "[[ mount.volume ]]"
          target   = "[[ mount.path ]]"
          readonly = false
          # Labels Docker gives the volume when it makes it: apps:destroy finds it by them
          # (a block of plain names: Nomad takes no dots in them).
          volume_options {
            labels {
              billowin_app = "[[ app ]]"
            }
          }
        }
[%- endfor %]
        labels = [{
          "billowin.app"     = "[[ app ]]"
          "billowin.release" = "[[ release ]]"
          "billowin.process" = "[[ proc.name ]]"
        }]
        # Docker keeps the output (`billowin logs` reads it there): Nomad collects none,
        # which saves a logmon and a docker_logger (about 28 MB) per instance.
        logging {
          type = "local"
          config {
            max-size = "[[ log_max_size ]]"
            max-file = "[[ log_max_files ]]"
          }
        }
      }

      env {
[%- if proc.web %]
        PORT = "${NOMAD_PORT_http}"
[%- endif %]
        BILLOWIN_APP     = "[[ app ]]"
        BILLOWIN_RELEASE = "[[ release ]]"
        BILLOWIN_PROCESS = "[[ proc.name ]]"
      }

[% include "config.hcl.partial" %]

      resources {
        cpu    = [[ proc.cpu ]]
        memory = [[ proc.memory ]]
      }
    }
  }
[% endfor -%]
}
