"""Binary hash codes for fast search: packed bits and Hamming distance (:mod:`.codes`), supervised
latent-layer training (:mod:`.train`), unsupervised ITQ (:mod:`.itq`), the layer itself (:mod:`.layer`)
and its place in an index folder (:mod:`.store`). Search with it: :mod:`jiansuo.search.hashing`."""
