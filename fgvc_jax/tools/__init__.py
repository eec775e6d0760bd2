"""What the commands (evaluate, predict, explain, export) share: a trained model restored from its workdir, image files, Grad-CAM."""
