/* The layer browser's map (gisportal/templates/layers/browser.html). No inline script: the page keeps the
 * strict CSP. Configuration comes from the JSON block #lb-config (json_script). Features are loaded by the
 * map's bbox from the page's features URL (the server shifts them when the basemap is GCJ-02, and shifts
 * the bbox back); a table row (click, or Enter/Space when focused) fetches that feature, zooms to it and
 * highlights it. Attribute values are shown with textContent, never as HTML. */
(function () {
  "use strict";

  function fmt(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_m, key) { return String(values[key]); });
  }

  function start() {
    var configEl = document.getElementById("lb-config");
    var mapEl = document.getElementById("lb-map");
    if (!configEl || !mapEl || typeof L === "undefined") { return; }
    var cfg = JSON.parse(configEl.textContent);
    var status = document.getElementById("lb-status");
    function say(text) { if (status) { status.textContent = text; } }

    var maxZoom = 18;
    cfg.tiles.forEach(function (t) { maxZoom = Math.max(maxZoom, t.maxZoom); });
    var map = L.map(mapEl, {maxZoom: maxZoom, keyboard: true});
    map.attributionControl.setPrefix("Leaflet");
    cfg.tiles.forEach(function (t) {
      L.tileLayer(t.url, {attribution: t.attribution, subdomains: t.subdomains, maxZoom: t.maxZoom}).addTo(map);
    });
    L.control.scale({imperial: false}).addTo(map);
    if (cfg.bounds) {
      map.fitBounds([[cfg.bounds[1], cfg.bounds[0]], [cfg.bounds[3], cfg.bounds[2]]]);
    } else {
      map.setView([40.77, 114.89], 10);
    }

    function popupFor(feature) {
      var div = L.DomUtil.create("div");
      var table = L.DomUtil.create("table", "", div);
      cfg.fields.forEach(function (f) {
        var tr = L.DomUtil.create("tr", "", table);
        L.DomUtil.create("th", "", tr).textContent = cfg.labels[f] || f;
        var v = feature.properties[f];
        L.DomUtil.create("td", "", tr).textContent = (v === null || v === undefined) ? "" : String(v);
      });
      return div;
    }

    function geoLayer(data, style, className) {
      return L.geoJSON(data, {
        className: className,
        style: function () { return Object.assign({className: className}, style); },
        pointToLayer: function (_f, latlng) {
          return L.circleMarker(latlng, Object.assign({radius: className === "lb-highlight" ? 10 : 5,
                                                       className: className}, style));
        },
        onEachFeature: function (feature, layer) {
          layer.bindPopup(function () { return popupFor(feature); });
          layer.on("click", function () { selectRow(feature.id, false); });
        }
      });
    }

    var baseStyle = {color: cfg.color, weight: 1.5, fillColor: cfg.color, fillOpacity: 0.2, opacity: 0.9};
    var hiStyle = {color: "#ff2d00", weight: 4, fillColor: "#ffd400", fillOpacity: 0.45, opacity: 1};
    var features = null;
    var located = "";   // the last "located" announcement, kept when the map reloads its features
    var highlight = null;
    var request = 0;
    var timer = null;

    function url(params) {
      var q = new URLSearchParams(params);
      return cfg.featuresUrl + "?" + q.toString();
    }

    function load() {
      var b = map.getBounds();
      var west = Math.max(-180, b.getWest()), east = Math.min(180, b.getEast());
      var south = Math.max(-90, b.getSouth()), north = Math.min(90, b.getNorth());
      if (!(west < east && south < north)) { return; }
      var mine = ++request;
      var params = {bbox: [west, south, east, north].map(function (v) { return v.toFixed(6); }).join(",")};
      if (cfg.q) { params.q = cfg.q; }
      mapEl.setAttribute("data-loading", "1");
      fetch(url(params), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) {
          if (mine !== request) { return; }
          if (features) { map.removeLayer(features); }
          features = geoLayer(data, baseStyle, "lb-feature").addTo(map);
          if (highlight) { highlight.bringToFront(); }
          var n = data.features.length;
          mapEl.setAttribute("data-features", String(n));
          mapEl.removeAttribute("data-loading");
          // keep the announcement of the selected feature: zooming to it reloads the features afterwards
          say((located ? located + " " : "") + fmt(data.truncated ? cfg.text.truncated : cfg.text.shown, {n: n}));
        })
        .catch(function () { mapEl.removeAttribute("data-loading"); say(cfg.text.failed); });
    }

    map.on("moveend", function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(load, 150);
    });
    load();

    var rows = Array.prototype.slice.call(document.querySelectorAll("tr.lb-row"));

    function markRow(id) {
      rows.forEach(function (r) {
        r.setAttribute("aria-selected", r.getAttribute("data-id") === String(id) ? "true" : "false");
      });
    }

    function selectRow(id, zoom) {
      markRow(id);
      fetch(url({id: id}), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) {
          if (highlight) { map.removeLayer(highlight); highlight = null; }
          if (!data.features.length) { located = ""; say(cfg.text.notFound); return; }
          var feature = data.features[0];
          highlight = geoLayer(data, hiStyle, "lb-highlight").addTo(map);
          highlight.bringToFront();
          if (zoom) {
            var bounds = highlight.getBounds();
            if (bounds.getNorthEast().equals(bounds.getSouthWest())) {
              map.setView(bounds.getCenter(), Math.max(map.getZoom(), 16));
            } else {
              map.fitBounds(bounds, {maxZoom: 17, padding: [20, 20]});
            }
          }
          mapEl.setAttribute("data-highlight", String(feature.id));
          var p = feature.properties;
          located = fmt(cfg.text.located, {name: p.name || p.code || feature.id});
          say(located);
        })
        .catch(function () { say(cfg.text.failed); });
    }

    rows.forEach(function (row) {
      var id = row.getAttribute("data-id");
      row.addEventListener("click", function () { selectRow(id, true); });
      row.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          selectRow(id, true);
        } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
          var i = rows.indexOf(row) + (e.key === "ArrowDown" ? 1 : -1);
          if (i >= 0 && i < rows.length) { e.preventDefault(); rows[i].focus(); }
        }
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
