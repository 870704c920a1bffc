"""myol_keras: BYOL and the mixing family (MYOL, ...) for small images, in Keras 3."""
