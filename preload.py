"""WebUI command-line options of CCDM (read later as shared.cmd_opts.ccdm_motion_dir)."""


def preload(parser):
    parser.add_argument("--ccdm-motion-dir", type=str, default=None,
                        help="CCDM: an extra folder with motion modules (.safetensors, .ckpt, .pth), "
                             "searched besides models/ccdm")
    parser.add_argument("--ccdm-motion-lora-dir", type=str, default=None,
                        help="CCDM: an extra folder with motion LoRAs, searched besides models/ccdm/lora and "
                             "models/Lora")
