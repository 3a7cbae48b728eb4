"""Subject matting: trimap-free alpha, edge-band refinement, guided upsampling, foreground."""
