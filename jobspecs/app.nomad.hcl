[#- Billowin app job. Rendered by billowin/jobspec.py with [[ ]] delimiters
    (Nomad's own {{ }} stays untouched) and strict undefined variables. -#]
job "[[ app ]]" {
  type        = "service"
  datacenters = ["*"]

  meta = {
    "billowin.app"     = "[[ app ]]"
    "billowin.release" = "[[ release ]]"
  }

[%- for proc in processes %]
  group "[[ proc.name ]]" {
    count = [[ proc.count ]]

[%- if proc.web %]
    network {
      port "http" {}
    }

    service {
      name = "[[ app ]]"
      port = "http"
      tags = ["billowin.web", "billowin.app=[[ app ]]", "billowin.release=[[ release ]]"]

      check {
        type     = "http"
        path     = "[[ proc.health_path ]]"
        interval = "2s"
        timeout  = "2s"
      }
    }
[%- endif %]

    restart {
      attempts = 3
      interval = "1m"
      delay    = "2s"
      mode     = "delay"
    }

    update {
      max_parallel      = 1
      min_healthy_time  = "3s"
      healthy_deadline  = "1m"
      progress_deadline = "2m"
      auto_revert       = true
    }

    task "[[ proc.name ]]" {
      driver = "docker"

      config {
        image = "[[ image ]]"
[%- if proc.web %]
        ports = ["http"]
[%- endif %]
[%- if proc.command %]
        args  = [[ proc.command | tojson ]]
[%- endif %]
      }

      env {
[%- if proc.web %]
        PORT = "${NOMAD_PORT_http}"
[%- endif %]
        BILLOWIN_APP     = "[[ app ]]"
        BILLOWIN_RELEASE = "[[ release ]]"
      }

      resources {
        cpu    = [[ proc.cpu ]]
        memory = [[ proc.memory ]]
      }
    }
  }
[%- endfor %]
}
