/* Housing project review: draw the site and its facilities on a map (issue 4).
 *
 * Progressive enhancement of the submission form on /review/: without this script the form takes a
 * file or pasted GeoJSON as before. With it, "draw on the map" shows a Leaflet map (our vendored
 * Leaflet + Leaflet.draw, the configured basemap or none, the district outlines for orientation) where
 * the planner draws the site polygon and facility points or footprints, and fills in the site's and
 * each facility's attributes. On submit the script writes one GeoJSON FeatureCollection (lon/lat,
 * properties as in layers/analysis/submission.py: role site|facility, name, developer, households,
 * population, kind, floor_area_m2) into the hidden field "drawn"; the server parses it exactly like an
 * upload, so it checks everything (this script checks nothing it would then disagree with).
 *
 * The site's name, developer, households and population are the form's site_* fields (inputs with a
 * data-prop attribute), which in upload mode fill what a Shapefile / GeoPackage / DXF leaves empty.
 *
 * Every user-visible string comes from data- attributes of #draw-panel (rendered with {% translate %}).
 * Keyboard: every tool is a button; the map pans with the arrow keys and zooms with +/-, and
 * "add a point at the map centre" adds a vertex (or places the facility) where the crosshair is.
 * No inline script anywhere (CSP script-src 'self').
 */
(function () {
  "use strict";

  var form = document.getElementById("review-form");
  var panel = document.getElementById("draw-panel");
  var hidden = document.getElementById("id_drawn");
  if (!form || !panel || !hidden || typeof L === "undefined" || !L.Draw) {
    return;
  }
  var T = panel.dataset;
  var modeBox = document.getElementById("source-mode");
  var uploadFields = document.getElementById("upload-fields");
  var mapDiv = document.getElementById("draw-map");
  var placeholder = document.getElementById("map-placeholder");
  var statusEl = document.getElementById("draw-status");
  var siteState = document.getElementById("draw-site-state");
  var list = document.getElementById("draw-facilities");
  var rowTemplate = document.getElementById("draw-facility-row");
  var btn = {
    site: document.getElementById("draw-site"),
    point: document.getElementById("draw-point"),
    footprint: document.getElementById("draw-footprint"),
    center: document.getElementById("draw-center"),
    undo: document.getElementById("draw-undo"),
    finish: document.getElementById("draw-finish"),
    cancel: document.getElementById("draw-cancel")
  };
  var SITE_STYLE = {color: "#08519c", weight: 3, fillColor: "#9ecae1", fillOpacity: 0.35};
  var FOOTPRINT_STYLE = {color: "#6a3d9a", weight: 2, fillColor: "#cab2d6", fillOpacity: 0.6};

  var map = null;
  var drawn = null;          // FeatureGroup of everything drawn
  var site = null;           // the site layer
  var facilities = [];       // [{id, layer, row}]
  var nextId = 1;
  var handler = null;        // the active Leaflet.draw handler
  var pendingRole = null;    // "site" | "point" | "footprint"

  function say(text) {
    statusEl.textContent = text || "";
  }

  function readJSON(id) {
    var el = document.getElementById(id);
    if (!el) { return null; }
    try { return JSON.parse(el.textContent); } catch (e) { return null; }
  }

  function localiseDraw() {
    var h = L.drawLocal.draw.handlers;
    h.polygon.tooltip = {start: T.tipPolyStart, cont: T.tipPolyCont, end: T.tipPolyEnd};
    h.polyline.error = T.tipIntersect;
    h.marker.tooltip = {start: T.tipMarker};
  }

  // ------------------------------------------------------------------ the map
  function buildMap() {
    map = L.map(mapDiv, {keyboard: true, maxZoom: 18, zoomControl: true});
    map.attributionControl.setPrefix("Leaflet");
    mapDiv.setAttribute("aria-label", T.mapLabel);
    var tiles = readJSON("draw-tiles") || [];
    tiles.forEach(function (t) {
      L.tileLayer(t.url, {attribution: t.attribution, subdomains: t.subdomains, maxZoom: t.maxZoom}).addTo(map);
    });
    L.control.scale({imperial: false}).addTo(map);
    var districts = readJSON("draw-districts");
    var outline = null;
    if (districts && districts.features && districts.features.length) {
      outline = L.geoJSON(districts, {
        interactive: false,
        style: function () { return {color: "#555", weight: 1.5, dashArray: "6 4", fill: false}; }
      }).addTo(map);
    }
    if (outline) {
      map.fitBounds(outline.getBounds());
    } else {
      map.setView([40.77, 114.89], 10);
    }
    drawn = L.featureGroup().addTo(map);
    var cross = L.DomUtil.create("div", "draw-crosshair", mapDiv);
    cross.setAttribute("aria-hidden", "true");
    map.on(L.Draw.Event.CREATED, onCreated);
    map.on(L.Draw.Event.DRAWVERTEX, function () { refreshButtons(); });
    map.on(L.Draw.Event.DRAWSTOP, function () {
      handler = null;
      pendingRole = null;
      refreshButtons();
    });
    var locate = document.getElementById("draw-locate");
    if (locate && outline) {
      locate.addEventListener("change", function () {
        outline.eachLayer(function (l) {
          if (l.feature && l.feature.properties.code === locate.value) {
            map.fitBounds(l.getBounds());
          }
        });
      });
    }
    window.gisportalReviewDraw = {map: map, collect: collect};  // for tests and the browser console
  }

  // ------------------------------------------------------------------ drawing
  function stopHandler() {
    if (handler) {
      handler.disable();  // fires DRAWSTOP
    }
    handler = null;
    pendingRole = null;
  }

  function start(role) {
    stopHandler();
    pendingRole = role;
    if (role === "point") {
      handler = new L.Draw.Marker(map, {repeatMode: false});
      say(T.msgPointStart);
    } else {
      handler = new L.Draw.Polygon(map, {
        allowIntersection: true, showArea: false, repeatMode: false,
        shapeOptions: role === "site" ? SITE_STYLE : FOOTPRINT_STYLE
      });
      say(role === "site" ? T.msgSiteStart : T.msgFootprintStart);
    }
    handler.enable();
    pendingRole = role;  // enable() may have fired a DRAWSTOP of the previous handler
    refreshButtons();
    mapDiv.focus();
  }

  function vertexCount() {
    return handler && handler._markers ? handler._markers.length : 0;
  }

  function refreshButtons() {
    var active = !!handler;
    var poly = active && pendingRole !== "point";
    btn.center.disabled = !active;
    btn.cancel.disabled = !active;
    btn.undo.disabled = !(poly && vertexCount() > 0);
    btn.finish.disabled = !(poly && vertexCount() >= 3);
    btn.site.setAttribute("aria-pressed", String(pendingRole === "site"));
    btn.point.setAttribute("aria-pressed", String(pendingRole === "point"));
    btn.footprint.setAttribute("aria-pressed", String(pendingRole === "footprint"));
  }

  function onCreated(e) {
    var role = pendingRole;
    if (role === "site") {
      setSite(e.layer);
      say(T.msgSiteDone);
    } else if (role === "point") {
      addFacility(pointMarker(e.layer.getLatLng()), {});
      say(T.msgFacilityDone);
    } else if (role === "footprint") {
      e.layer.setStyle(FOOTPRINT_STYLE);
      addFacility(e.layer, {});
      say(T.msgFacilityDone);
    }
  }

  function pointMarker(latlng) {
    var m = L.marker(latlng, {draggable: true, keyboard: true, autoPan: true});
    return m;
  }

  function setSite(layer) {
    if (site) {
      drawn.removeLayer(site);
    }
    site = layer;
    if (site.setStyle) { site.setStyle(SITE_STYLE); }
    drawn.addLayer(site);
    if (site.bringToBack) { site.bringToBack(); }
    siteState.textContent = siteState.dataset.done;
  }

  function addFacility(layer, props) {
    var id = nextId++;
    var label = T.facilityLabel + " " + id;
    var row = rowTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.facility = String(id);
    row.querySelector(".fac-label").textContent = label;
    var name = row.querySelector(".fac-name");
    var kind = row.querySelector(".fac-kind");
    var area = row.querySelector(".fac-area");
    name.value = props.name || "";
    if (props.kind) {
      if (!Array.prototype.some.call(kind.options, function (o) { return o.value === props.kind; })) {
        kind.add(new Option(props.kind, props.kind));  // keep what was sent; the server judges it
      }
      kind.value = props.kind;
    }
    area.value = props.floor_area_m2 === undefined || props.floor_area_m2 === null ? "" : String(props.floor_area_m2);
    row.querySelector(".fac-remove").addEventListener("click", function () {
      removeFacility(id);
    });
    list.appendChild(row);
    layer.bindTooltip(label, {permanent: true, direction: "right", offset: [10, 0], className: "draw-label"});
    drawn.addLayer(layer);
    facilities.push({id: id, layer: layer, row: row});
    area.focus();
  }

  function removeFacility(id) {
    facilities = facilities.filter(function (f) {
      if (f.id === id) {
        drawn.removeLayer(f.layer);
        f.row.remove();
        return false;
      }
      return true;
    });
    say(T.msgRemoved);
  }

  // ------------------------------------------------------------------ the FeatureCollection
  function value(v) {
    v = (v || "").trim();
    if (v === "") { return null; }
    return /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v;  // anything else goes as text: the server says why
  }

  function prop(name) {
    var el = form.querySelector('[data-prop="' + name + '"]');
    return el ? el.value : "";
  }

  function collect() {
    var features = [];
    if (site) {
      var p = {role: "site", name: prop("name").trim(), developer: prop("developer").trim(),
               households: value(prop("households"))};
      var pop = value(prop("population"));
      if (pop !== null) { p.population = pop; }
      features.push({type: "Feature", properties: p, geometry: site.toGeoJSON().geometry});
    }
    facilities.forEach(function (f) {
      features.push({type: "Feature", geometry: f.layer.toGeoJSON().geometry, properties: {
        role: "facility", name: f.row.querySelector(".fac-name").value.trim(),
        kind: f.row.querySelector(".fac-kind").value,
        floor_area_m2: value(f.row.querySelector(".fac-area").value)
      }});
    });
    return features.length ? JSON.stringify({type: "FeatureCollection", features: features}) : "";
  }

  function restore(text) {
    var fc;
    try { fc = JSON.parse(text); } catch (e) { return; }
    if (!fc || !Array.isArray(fc.features)) { return; }
    fc.features.forEach(function (f) {
      var props = (f && f.properties) || {};
      if (!f || !f.geometry) { return; }
      if (props.role === "site") {
        var s = L.geoJSON(f.geometry).getLayers()[0];
        if (s) { setSite(s); }
        ["name", "developer", "households", "population"].forEach(function (k) {
          var el = form.querySelector('[data-prop="' + k + '"]');
          if (el && props[k] !== undefined && props[k] !== null) { el.value = String(props[k]); }
        });
      } else if (props.role === "facility") {
        if (f.geometry.type === "Point") {
          var c = f.geometry.coordinates;
          addFacility(pointMarker(L.latLng(c[1], c[0])), props);
        } else {
          var l = L.geoJSON(f.geometry, {style: function () { return FOOTPRINT_STYLE; }}).getLayers()[0];
          if (l) { addFacility(l, props); }
        }
      }
    });
    if (drawn.getLayers().length) {
      map.fitBounds(drawn.getBounds().pad(0.5));
    }
    say(T.msgRestored);
  }

  // ------------------------------------------------------------------ modes
  function setMode(mode) {
    var draw = mode === "draw";
    panel.hidden = !draw;
    uploadFields.hidden = draw;
    mapDiv.hidden = !draw;
    if (placeholder) { placeholder.hidden = draw; }
    form.querySelectorAll(".draw-only").forEach(function (el) { el.hidden = !draw; });
    var note = document.getElementById("site-fields-note");
    if (note) { note.textContent = draw ? note.dataset.draw : note.dataset.upload; }
    // disabled fields are not sent: the server sees exactly one source
    uploadFields.querySelectorAll("input, textarea, select").forEach(function (el) {
      if (el.name !== "srid") { el.disabled = draw; }
    });
    if (draw) {
      if (!map) {
        localiseDraw();
        buildMap();
      }
      map.invalidateSize();
    } else if (handler) {
      stopHandler();
    }
  }

  btn.site.addEventListener("click", function () { start("site"); });
  btn.point.addEventListener("click", function () { start("point"); });
  btn.footprint.addEventListener("click", function () { start("footprint"); });
  btn.cancel.addEventListener("click", function () {
    stopHandler();
    refreshButtons();
    say(T.msgCancelled);
  });
  btn.undo.addEventListener("click", function () {
    if (handler && handler.deleteLastVertex) { handler.deleteLastVertex(); }
    refreshButtons();
  });
  btn.finish.addEventListener("click", function () {
    if (handler && handler.completeShape && vertexCount() >= 3) { handler.completeShape(); }
  });
  btn.center.addEventListener("click", function () {
    if (!handler) { say(T.msgIdle); return; }
    var c = map.getCenter();
    if (pendingRole === "point") {
      var role = pendingRole;
      stopHandler();
      pendingRole = role;
      onCreated({layer: L.marker(c)});
      pendingRole = null;
      refreshButtons();
    } else {
      handler.addVertex(c);
      say(T.msgVertex + " " + vertexCount());
      refreshButtons();
    }
  });

  modeBox.hidden = false;
  modeBox.querySelectorAll('input[name="source_mode"]').forEach(function (r) {
    r.addEventListener("change", function () { if (r.checked) { setMode(r.value); } });
  });

  form.addEventListener("submit", function () {
    var draw = document.getElementById("mode-draw").checked;
    hidden.value = draw ? collect() : "";
  });

  if (hidden.value.trim()) {  // the form came back with an error: keep what was drawn
    document.getElementById("mode-draw").checked = true;
    setMode("draw");
    restore(hidden.value);
  } else {
    setMode("upload");
  }
  refreshButtons();
})();
