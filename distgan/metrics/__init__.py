"""Quality metrics for trained generators (e.g. PacGAN's 2-D mixture mode metrics in `modes`)."""
